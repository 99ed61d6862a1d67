"""The one logging set-up: one JSON object per line (aws-lambda-powertools).

CloudWatch metric filters match ``{ $.level = "CRITICAL" }`` on these lines. In Lambda the lines go to
stdout (CloudWatch Logs); the local runner sets TOTESYS_LOG_FILE to keep them in a file instead.
"""
import logging
import os

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
