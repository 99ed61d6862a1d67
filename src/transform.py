"""The transform Lambda: ingest batches -> star-schema Parquet (logic in utils.transform.run)."""
from typing import Any
from utils.transform.run import run_transform
from utils.logger import stage_handler
from utils.metrics import stage_metrics


@stage_metrics("transform")
@stage_handler("transform")
def lambda_handler(event: Any, context: Any) -> Any:
    """Event: the ingest output ``{table_name: file_key}`` (a dict; only logged).

    Transforms every ingest batch not yet transformed, oldest first. Returns
    ``{"batches": [batch_id, ...], "tables": {warehouse_table: rows}}``; raises (after a CRITICAL
    log line) on any failure.
    """
    return run_transform(event)
