"""Hand-written landing batches through the real transform and load handlers, and what the version attacks
check after them (tests/integration/load/test_version_attacks.py, test_fifth_pass_attacks.py)."""
import pyarrow as pa
import pytest

import load
import transform
from tests.support.batches import T0, base_batch, sales_order, write_ingest_batch
from tests.support.db import run_sql
from utils.catalog.source import LANDING_SCHEMAS
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.load import merge
from utils.load.rollups import compare_rollups
from utils.load.schema import schema_statements
from utils.verify.history import check_history
from utils.verify.landing import loaded_batch_ids, read_landed


def create_narrow_warehouse(url):
    """The warehouse's schema at ``url`` with dim_design.design_name varchar(12): a longer design name is
    rejected, and an order referencing that design is parked until a fitting version arrives."""
    for statement in schema_statements():
        run_sql(url, statement.replace("design_name varchar NOT NULL", "design_name varchar(12) NOT NULL"))


def design(design_id, name, at=T0):
    return {"design_id": design_id, "created_at": at, "last_updated": at, "design_name": name,
            "file_location": "/usr", "file_name": f"design-{design_id}.json"}


def park_order_3(s3, buckets):
    """The first batch (``base_batch`` at T0), with design 2 named too long for the narrow warehouse
    (rejected) and order 3 (111 units) referencing it (parked until a fitting version of design 2 arrives)."""
    batch = base_batch()
    batch["design"].append(design(2, "A design name far too long"))
    batch["sales_order"].append(sales_order(3, design_id=2, units_sold=111))
    return run_batch(s3, buckets, T0, batch)


def run_batch(s3, buckets, batch_time, rows_by_table):
    tables = {name: pa.Table.from_pylist(rows, schema=LANDING_SCHEMAS[name])
              for name, rows in rows_by_table.items()}
    write_ingest_batch(s3, buckets["ingest"], batch_time, tables)
    return load.lambda_handler(transform.lambda_handler({}, None), None)


def history_and_rollups(s3, bucket, url):
    """(the fact_sales_order HistoryResult of verify's history check, compare_rollups' differences)."""
    conn = connect_to_db(credentials_from_url(url))
    try:
        landed = read_landed(s3, bucket, loaded_batch_ids(conn))
        history = {h.table: h for h in check_history(conn, s3, bucket, landed.manifests)}
        return history["fact_sales_order"], compare_rollups(conn)
    finally:
        close_db_connection(conn)


def sales_versions(url, sales_order_id):
    return [tuple(row) for row in run_sql(
        url, "SELECT units_sold, etl_load_order FROM fact_sales_order WHERE sales_order_id = :i "
             "ORDER BY etl_load_order, sales_record_id", i=sales_order_id)]


def load_killed_after(monkeypatch, step, processed):
    """Run the load of ``processed`` (the transform's result) killed right after ``merge.<step>`` (a step of
    the batch's transaction, e.g. ``update_rollups``, ``record_batch``), before its COMMIT; the step is
    restored after."""
    real = getattr(merge, step)

    def killed(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError(f"killed after {step}, before COMMIT")
    monkeypatch.setattr(merge, step, killed)
    with pytest.raises(RuntimeError, match="before COMMIT"):
        load.lambda_handler(processed, None)
    monkeypatch.setattr(merge, step, real)
