"""The transform Lambda: ingest batches -> star-schema Parquet (logic in utils.transform.run)."""
from typing import Any

from utils.rebuild.rounds import transform_stage
from utils.logger import stage_handler
from utils.metrics import stage_metrics


@stage_metrics("transform")
@stage_handler("transform")
def lambda_handler(event: Any, context: Any) -> Any:
    """Event: the ingest output ``{table_name: file_key}`` (a dict; only logged).

    Transforms every ingest batch not yet transformed, oldest first (while a rebuild on AWS is underway: a
    bounded round of it instead, ``utils.rebuild.rounds``). Returns
    ``{"batches": [batch_id, ...], "tables": {warehouse_table: rows}}``; raises (after a CRITICAL
    log line) on any failure.
    """
    return transform_stage(event)
