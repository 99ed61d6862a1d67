"""`totesys verify`'s time on a loaded warehouse (called by `make bench-scale` after the x100 backfill).

Times one verify of the whole warehouse (all ten tables and the fact history), then one after a single
warehouse row was changed (the narrowing to the differing id), and notes the machine's load average.
Not a test: prints figures.
"""
import os
import time

import boto3

from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.verify.run import verify


def _timed(source_url, warehouse_url, bucket):
    source = connect_to_db(credentials=credentials_from_url(source_url), timezone=None)
    warehouse = connect_to_db(credentials=credentials_from_url(warehouse_url))
    try:
        started = time.perf_counter()
        report = verify(source, warehouse, boto3.client("s3"), bucket, 3600)
        return round(time.perf_counter() - started, 2), report
    finally:
        close_db_connection(source)
        close_db_connection(warehouse)


def run(source_url, warehouse_url, bucket):
    """{"seconds", "seconds_one_row_changed", "source_rows", "mismatches", "load_average"}."""
    seconds, report = _timed(source_url, warehouse_url, bucket)
    warehouse = connect_to_db(credentials=credentials_from_url(warehouse_url))
    try:
        warehouse.run("UPDATE fact_payment SET paid = NOT paid WHERE payment_record_id = "
                      "(SELECT max(payment_record_id) FROM fact_payment)")
    finally:
        close_db_connection(warehouse)
    changed_seconds, changed = _timed(source_url, warehouse_url, bucket)
    figures = {"seconds": seconds, "seconds_one_row_changed": changed_seconds,
               "source_rows": sum(t.matched + sum(t.counts.values()) - t.counts["extra"] for t in report.tables),
               "mismatches": report.mismatches, "mismatches_after_change": changed.mismatches,
               "load_average": os.getloadavg()}
    print(f"verify: {seconds} s ({figures['source_rows']:,} source rows compared, {report.mismatches} "
          f"mismatches); after changing one fact row: {changed_seconds} s, {changed.mismatches} mismatch(es); "
          f"load average {figures['load_average']}", flush=True)
    return figures
