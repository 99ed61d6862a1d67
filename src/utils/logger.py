"""The one logging set-up: one JSON object per line (aws-lambda-powertools).

CloudWatch metric filters match ``{ $.level = "CRITICAL" }`` on these lines.
"""
import os

from aws_lambda_powertools import Logger


def get_logger(stage):
    """Return the structured logger for a pipeline stage ('ingest', ...)."""
    return Logger(
        service=os.environ.get("POWERTOOLS_SERVICE_NAME", "totesys"),
        level=os.environ.get("LOG_LEVEL", "INFO"),
        stage=stage,
    )
