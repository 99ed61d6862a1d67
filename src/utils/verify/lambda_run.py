"""The verify Lambda's work: settings, credentials and connections, one verify, the VerifyMismatches metric.

The handler (``src/verify.py``) stays thin. The metric is one EMF line, ``VerifyMismatches`` (dimension
``service``), emitted on every completed verify (0 when everything matched), so the alarm in
main-terraform/verify.tf sees a datapoint per run; a verify that cannot run raises (CRITICAL line, the
Lambda's Errors metric) and emits none.
"""
from typing import Any, Dict
import time

import boto3

from utils.aws.secrets import db_connections_get_secret
from utils.config import load_settings
from utils.db.connection import close_db_connection, connect_to_db
from utils.logger import get_logger
from utils.metrics import NAMESPACE, SERVICE, emit
from utils.verify.run import verify

logger = get_logger("verify")


def mismatches_metric(count: int) -> Dict[str, Any]:
    """The EMF object of VerifyMismatches."""
    return {"_aws": {"Timestamp": int(time.time() * 1000),
                     "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["service"]],
                                            "Metrics": [{"Name": "VerifyMismatches", "Unit": "Count"}]}]},
            "service": SERVICE, "VerifyMismatches": count}


def run_verify(s3_client: Any = None, secrets_client: Any = None) -> Dict[str, Any]:
    """Verify totesys against the warehouse; log one line per table with differences; emit the metric;
    return the report as a dict (``Report.to_dict``)."""
    settings = load_settings()
    s3_client = s3_client or boto3.client("s3")
    secrets_client = secrets_client or boto3.client("secretsmanager")
    source_credentials = db_connections_get_secret(secrets_client, settings.totesys_secret_id)
    warehouse_credentials = db_connections_get_secret(secrets_client, settings.warehouse_secret_id)
    source = connect_to_db(source_credentials, timezone=None, role="totesys")
    try:
        warehouse = connect_to_db(warehouse_credentials, role="warehouse")
        try:
            report = verify(source, warehouse, s3_client, settings.ingest_bucket,
                            settings.ingest_overlap_seconds,
                            connect_warehouse=lambda: connect_to_db(warehouse_credentials, role="warehouse"))
        finally:
            close_db_connection(warehouse)
    finally:
        close_db_connection(source)
    for table in report.tables:
        if table.mismatches:
            logger.error("verify: mismatch", table=table.table, **table.counts, ids=table.ids)
    for history in report.history:
        if not history.matched:
            logger.error("verify: fact history mismatch", table=history.table,
                         not_in_warehouse=history.not_in_warehouse, not_landed=history.not_landed)
    rollups = report.rollups
    if rollups.mismatches:
        logger.error("verify: rollup mismatch", table=rollups.table, mismatches=rollups.mismatches,
                     rollups=rollups.rollups, keys=rollups.keys)
    logger.info("verify finished", mismatches=report.mismatches, last_loaded_batch=report.last_loaded_batch)
    emit(mismatches_metric(report.mismatches))
    return report.to_dict()
