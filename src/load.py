"""The load Lambda: processed batches -> the warehouse, exactly once (logic in utils.load.run)."""
from typing import Any

from utils.rebuild.rounds import load_stage
from utils.logger import stage_handler
from utils.metrics import stage_metrics


@stage_metrics("load")
@stage_handler("load")
def lambda_handler(event: Any, context: Any) -> Any:
    """Event: the transform output ``{"batches": [...], "tables": {...}}`` (a dict; only logged).

    Loads every processed batch not yet in the warehouse ledger, oldest first, one transaction
    each. ``{"start_rebuild": {...}}`` starts a rebuild on AWS and an event with ``rebuild`` loads a
    bounded round of it (``utils.rebuild.rounds``). Returns ``{"batches": [batch_id, ...], "tables":
    {warehouse_table: rows}}``; raises (after a CRITICAL log line) on any failure.
    """
    return load_stage(event)
