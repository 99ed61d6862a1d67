"""The verify Lambda: totesys compared with the warehouse on its own schedule (logic in utils.verify)."""
from typing import Any
from utils.logger import stage_handler
from utils.verify.lambda_run import run_verify


@stage_handler("verify")
def lambda_handler(event: Any, context: Any) -> Any:
    """Any event (the schedule's). Returns the verify report (``matched``, ``mismatches``, per table
    counts and up to 10 ids of each difference); the ``VerifyMismatches`` metric carries the count.
    Raises (after a CRITICAL log line) when verify cannot run."""
    return run_verify()
