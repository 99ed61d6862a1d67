"""The ingest Lambda: totesys -> Parquet in the ingest bucket (logic in utils.ingest.modes.run_ingest)."""
from typing import Any
from utils.ingest.modes import run_ingest
from utils.logger import stage_handler
from utils.metrics import stage_metrics


@stage_metrics("ingest")
@stage_handler("ingest")
def lambda_handler(event: Any, context: Any) -> Any:
    """Event ``{"tables_to_query": [...]}`` (absent: all eleven tables).

    Returns ``{table_name: file_key}`` for the tables that produced a file; raises (after a
    CRITICAL log line) on any failure.
    """
    return run_ingest(event)
