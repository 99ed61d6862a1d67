"""Helpers (no tests): the three stages chained in-process, as the state machine chains them."""
import ingest
import load
import transform


def run_pipeline(event=None):
    """One ingest -> transform -> load; returns the load's result."""
    files = ingest.lambda_handler(event or {}, None)
    transformed = transform.lambda_handler(files, None)
    return load.lambda_handler(transformed, None)
