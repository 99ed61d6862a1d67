"""The one logging set-up: one JSON object per line (aws-lambda-powertools).

CloudWatch metric filters match ``{ $.level = "CRITICAL" }`` on these lines: a stage failure
that no retry will mend. A RetryableError is logged at ERROR (docs/DEPLOY.md, "Logging levels
and alerts"). In Lambda the lines go to
stdout (CloudWatch Logs); the local runner sets TOTESYS_LOG_FILE to keep them in a file instead.

Powertools' own pattern: one ``Logger`` per service, created once. ``get_logger(stage)`` keeps them in
a registry, so the stage module (which calls it at import) and ``stage_handler`` share the same object;
two ``Logger(service=X)`` objects would share one underlying logger, and the second would never get a
formatter. The destination is decided per line, not per Logger: the local runner runs several
executions in one process, each with its own TOTESYS_LOG_FILE.
"""
import functools
import logging
import os
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict

from aws_lambda_powertools import Logger

from utils.aws.sdk import require_tested_sdk
from utils.db.connection import set_invocation_deadline
from utils.errors import RetryableError

_LOGGERS: Dict[str, Logger] = {}
_REGISTRY_LOCK = threading.Lock()


def write_line(line: str) -> None:
    """Append one line (ending in a newline) to the file TOTESYS_LOG_FILE names *now* (opened and closed
    per line), or write it to the current ``sys.stdout`` when the variable is unset. Log records and the
    EMF metric lines (utils.metrics) both go through here; sys.stdout is never swapped."""
    path = os.environ.get("TOTESYS_LOG_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(line)
    else:
        sys.stdout.write(line)
        sys.stdout.flush()


class CurrentLogFileHandler(logging.Handler):
    """Writes each formatted record to the file named by TOTESYS_LOG_FILE *when the record is
    emitted* (appending; the file is opened and closed per line), or to the current ``sys.stdout``
    when the variable is unset. One handler serves every run of a process."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never break the pipeline (logging's contract)
            self.handleError(record)


def service_name(stage: str) -> str:
    """The powertools service of a stage: ``$POWERTOOLS_SERVICE_NAME-<stage>`` (default totesys-)."""
    return f"{os.environ.get('POWERTOOLS_SERVICE_NAME', 'totesys')}-{stage}"


def get_logger(stage: str) -> Any:
    """Return THE structured logger of a pipeline stage ('ingest', 'transform', 'load'): created on
    the first call for its service, the same object on every later call. Every line carries
    ``stage``; ``stage_handler`` adds ``run_id`` for the duration of an invocation."""
    service = service_name(stage)
    with _REGISTRY_LOCK:
        logger = _LOGGERS.get(service)
        if logger is None:
            logger = Logger(service=service, level=os.environ.get("LOG_LEVEL", "INFO"), utc=True,
                            stage=stage, logger_handler=CurrentLogFileHandler())
            _LOGGERS[service] = logger
        return logger


def stage_handler(stage: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Lambda handler: every log line of the invocation carries ``run_id`` (the Lambda
    request id; a fresh id when there is no context); an exception is logged once (error type and
    message) and re-raised unchanged: at ERROR when it is a RetryableError (the state machine retries
    it, and a retry that succeeds must not count as a failure), at CRITICAL otherwise (the line the
    CRITICAL metric filter counts); the invocation ends with one line giving its outcome and
    ``duration_ms``. Before the handler runs, ``require_tested_sdk`` checks the AWS SDK."""
    logger = get_logger(stage)

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def wrapper(event: Any, context: Any) -> Any:
            run_id = getattr(context, "aws_request_id", None) or uuid.uuid4().hex
            logger.append_keys(run_id=run_id)
            set_invocation_deadline(context)  # the database's timeouts follow the function's
            started = time.perf_counter()
            outcome = "failed"
            try:
                require_tested_sdk()
                result = handler(event, context)
                outcome = "succeeded"
                return result
            except RetryableError as err:
                logger.error(f"{stage} failed, retryable", error_type=type(err).__name__, error=str(err),
                             retryable=True)
                raise
            except Exception as err:
                # The one place a stage failure becomes the CRITICAL line the metric filter alarms on.
                logger.critical(f"{stage} failed", error_type=type(err).__name__, error=str(err),
                                retryable=False)
                raise
            finally:
                logger.info(f"{stage} {outcome}", outcome=outcome,
                            duration_ms=round((time.perf_counter() - started) * 1000, 1))
                logger.remove_keys(["run_id"])
                set_invocation_deadline(None)
        return wrapper
    return decorate
