"""The one logging set-up: one JSON object per line (aws-lambda-powertools).

CloudWatch metric filters match ``{ $.level = "CRITICAL" }`` on these lines. In Lambda the lines go to
stdout (CloudWatch Logs); the local runner sets TOTESYS_LOG_FILE to keep them in a file instead.
"""
import functools
import logging
import os
import time
import uuid

from aws_lambda_powertools import Logger


def get_logger(stage):
    """Return the structured logger for a pipeline stage ('ingest', 'transform', 'load')."""
    options = {}
    log_file = os.environ.get("TOTESYS_LOG_FILE")
    if log_file:
        options["logger_handler"] = logging.FileHandler(log_file)
    # One service name per stage: powertools shares formatter state between Loggers of the same
    # service, and locally all three stages run in one process.
    base = os.environ.get("POWERTOOLS_SERVICE_NAME", "totesys")
    return Logger(
        service=f"{base}-{stage}",
        level=os.environ.get("LOG_LEVEL", "INFO"),
        utc=True,
        stage=stage,
        **options,
    )


def stage_handler(stage):
    """Decorate a Lambda handler: every log line of the invocation carries ``run_id`` (the Lambda
    request id; a fresh id when there is no context); an exception is logged at CRITICAL (error type
    and message) and re-raised unchanged; the invocation ends with one line giving its outcome and
    ``duration_ms``."""
    logger = get_logger(stage)

    def decorate(handler):
        @functools.wraps(handler)
        def wrapper(event, context):
            run_id = getattr(context, "aws_request_id", None) or uuid.uuid4().hex
            logger.append_keys(run_id=run_id)
            started = time.perf_counter()
            outcome = "failed"
            try:
                result = handler(event, context)
                outcome = "succeeded"
                return result
            except Exception as err:
                # The one place a stage failure becomes the CRITICAL line the metric filter alarms on.
                logger.critical(f"{stage} failed", error_type=type(err).__name__, error=str(err))
                raise
            finally:
                logger.info(f"{stage} {outcome}", outcome=outcome,
                            duration_ms=round((time.perf_counter() - started) * 1000, 1))
                logger.remove_keys(["run_id"])
        return wrapper
    return decorate
