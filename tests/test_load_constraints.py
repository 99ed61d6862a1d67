"""Set-wise foreign-key validation of large fact appends (utils/load/constraints.py), on a real warehouse."""
import boto3
import pytest

import load
import transform
from totesys_local.aws_emulation import put_credentials_secret
from tests.support.db import run_sql as query
from tests.support.batches import T0, base_batch, payment, sales_order, write_ingest_batch
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.errors import ForeignKeyViolationError
from utils.load import constraints, run as load_run
from utils.load.schema import ensure_warehouse_schema

FACT_TABLES = ("fact_payment", "fact_purchase_order", "fact_sales_order")
CONSTRAINTS = ("SELECT c.relname, con.conname, pg_get_constraintdef(con.oid), con.oid::bigint "
               "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
               "WHERE con.contype = 'f' AND c.relname = ANY(:tables) ORDER BY 1, 2")


def definitions(url):
    """[[table, constraint, definition]] of every fact foreign key."""
    return [row[:3] for row in query(url, CONSTRAINTS, tables=list(FACT_TABLES))]


def oids(url):
    return {(row[0], row[1]): row[3] for row in query(url, CONSTRAINTS, tables=list(FACT_TABLES))}


@pytest.fixture
def s3(buckets):
    return boto3.client("s3")


@pytest.fixture
def warehouse(pipeline_env, warehouse_url):
    """A warehouse with its schema, one fact key made DEFERRABLE and one NOT VALID (so re-creation
    must keep both), wired as the load's secret."""
    pipeline_env(warehouse_url=warehouse_url)
    conn = connect_to_db(credentials_from_url(warehouse_url))
    try:
        ensure_warehouse_schema(conn)
        conn.run("ALTER TABLE fact_sales_order ALTER CONSTRAINT fact_sales_order_design_id_fkey "
                 "DEFERRABLE INITIALLY DEFERRED")
        conn.run("ALTER TABLE fact_payment DROP CONSTRAINT fact_payment_transaction_id_fkey")
        conn.run("ALTER TABLE fact_payment ADD CONSTRAINT fact_payment_transaction_id_fkey "
                 "FOREIGN KEY (transaction_id) REFERENCES dim_transaction (transaction_id) NOT VALID")
    finally:
        close_db_connection(conn)
    return warehouse_url


@pytest.fixture
def always_setwise(monkeypatch):
    monkeypatch.setattr(constraints, "SETWISE_MIN_ROWS", 1)
    monkeypatch.setattr(constraints, "SETWISE_MIN_FRACTION", 0)


def run_pipeline(s3, buckets, batch):
    write_ingest_batch(s3, buckets["ingest"], T0, batch)
    return load.lambda_handler(transform.lambda_handler({}, None), None)


def test_a_large_append_validates_set_wise_and_recreates_every_key_exactly(
        s3, buckets, warehouse, always_setwise, caplog):
    before, before_oids = definitions(warehouse), oids(warehouse)
    assert any("DEFERRABLE INITIALLY DEFERRED" in row[2] for row in before)
    assert any(row[2].endswith("NOT VALID") for row in before)
    result = run_pipeline(s3, buckets, base_batch())
    assert result["tables"]["fact_sales_order"] == 2 and result["rejected_rows"] == 0
    assert definitions(warehouse) == before
    # every key was re-created (new oids): the set-wise path ran, and said so once per fact table
    assert not set(oids(warehouse).values()) & set(before_oids.values())
    validated = [r for r in caplog.records if r.getMessage() == "foreign keys validated set-wise"]
    assert len(validated) == len(FACT_TABLES)


def test_a_small_append_keeps_the_row_by_row_checks(s3, buckets, warehouse, caplog):
    """Below the measured threshold nothing is dropped (the default thresholds, a 2-row batch)."""
    before = oids(warehouse)
    run_pipeline(s3, buckets, base_batch())
    assert oids(warehouse) == before
    assert not [r for r in caplog.records if r.getMessage() == "foreign keys validated set-wise"]


def test_use_setwise_follows_both_thresholds(warehouse):
    conn = connect_to_db(credentials_from_url(warehouse))
    try:
        assert not constraints.use_setwise(conn, "fact_sales_order", constraints.SETWISE_MIN_ROWS - 1)
        assert constraints.use_setwise(conn, "fact_sales_order", constraints.SETWISE_MIN_ROWS)
        conn.run("UPDATE pg_class SET reltuples = :rows WHERE relname = 'fact_sales_order'",
                 rows=constraints.SETWISE_MIN_ROWS * 100)
        assert not constraints.use_setwise(conn, "fact_sales_order", constraints.SETWISE_MIN_ROWS)
    finally:
        close_db_connection(conn)


def parked(url):
    return query(url, "SELECT source_table, source_id, column_name, resolved_batch_id IS NULL "
                      "FROM etl_rejected_rows ORDER BY 1, 2")


@pytest.mark.parametrize("setwise", [True, False], ids=["set-wise", "row-by-row"])
def test_a_dangling_reference_found_by_the_keys_is_parked_and_the_rest_appended(
        s3, buckets, pipeline_env, warehouse_url, monkeypatch, caplog, setwise):
    """Plain keys (validated, checked at once): the append goes first and the keys find the dangling
    row; the append is undone, the row parked, the rest appended; the keys are as they were."""
    pipeline_env(warehouse_url=warehouse_url)
    if setwise:
        monkeypatch.setattr(constraints, "SETWISE_MIN_ROWS", 1)
        monkeypatch.setattr(constraints, "SETWISE_MIN_FRACTION", 0)
    batch = base_batch()
    batch["sales_order"].append(sales_order(3, design_id=99))
    result = run_pipeline(s3, buckets, batch)
    before = definitions(warehouse_url)
    assert result["tables"]["fact_sales_order"] == 2 and result["rejected_rows"] == 1
    assert parked(warehouse_url) == [["sales_order", 3, "design_id", True]]
    assert query(warehouse_url, "SELECT sales_order_id FROM fact_sales_order ORDER BY 1") == [[1], [2]]
    assert [r.getMessage() for r in caplog.records].count(
        "dangling references: parking them before the append") == 1
    assert definitions(warehouse_url) == before


def test_keys_checked_late_or_not_at_all_are_never_trusted_to_find_dangling_rows(
        s3, buckets, warehouse, monkeypatch):
    """fact_sales_order's design key is INITIALLY DEFERRED (row by row it would only object at COMMIT,
    failing the batch) and fact_payment's transaction key NOT VALID (re-created set-wise it would not
    check the appended rows): for those tables the dangling rows are looked for before the append."""
    monkeypatch.setattr(constraints, "SETWISE_MIN_FRACTION", 0)
    monkeypatch.setattr(constraints, "SETWISE_MIN_ROWS", 4)  # the 4 payments set-wise, 3 orders row by row
    batch = base_batch()
    batch["sales_order"].append(sales_order(3, design_id=99))
    batch["payment"].append(payment(4, 99))
    result = run_pipeline(s3, buckets, batch)
    assert result["rejected_rows"] == 2
    assert parked(warehouse) == [["payment", 4, "transaction_id", True],
                                 ["sales_order", 3, "design_id", True]]
    assert query(warehouse, "SELECT count(*) FROM fact_payment")[0][0] == 3
    assert query(warehouse, "SELECT count(*) FROM fact_sales_order")[0][0] == 2


def test_a_dangling_reference_fails_naming_the_constraint_and_rolls_back(
        s3, buckets, warehouse, always_setwise, monkeypatch):
    """The load parks dangling facts before the insert; with that first line of defence removed, the
    re-created constraint is the second: the batch fails, naming it, and nothing of it stays."""
    real_ensure = load_run.ensure_warehouse_schema

    def without_anti_join(conn):
        targets = real_ensure(conn)
        for target in targets.values():
            target.references = []
        return targets
    monkeypatch.setattr(load_run, "ensure_warehouse_schema", without_anti_join)
    batch = base_batch()
    batch["sales_order"].append(sales_order(3, design_id=99))
    before = definitions(warehouse)
    with pytest.raises(ForeignKeyViolationError, match="fact_sales_order: foreign key "
                                                       "fact_sales_order_design_id_fkey violated") as err:
        run_pipeline(s3, buckets, batch)
    assert (err.value.table, err.value.constraint) == ("fact_sales_order", "fact_sales_order_design_id_fkey")
    assert "design_id)=(99)" in str(err.value)
    assert definitions(warehouse) == before
    for table in FACT_TABLES + ("dim_design", "etl_load_ledger"):
        assert query(warehouse, f"SELECT count(*) FROM {table}")[0][0] == 0  # nosec B608


def test_a_load_user_who_does_not_own_the_facts_falls_back_to_row_by_row(
        s3, buckets, warehouse, always_setwise, monkeypatch, caplog):
    owner = credentials_from_url(warehouse)
    loader_url = f"postgresql://etl_loader:not-the-owner@{owner['host']}:{owner['port']}/{owner['database']}"
    query(warehouse, "CREATE ROLE etl_loader LOGIN PASSWORD 'not-the-owner'")
    try:
        query(warehouse, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO etl_loader")
        query(warehouse, "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO etl_loader")
        put_credentials_secret("test/warehouse-loader", loader_url)
        monkeypatch.setenv("WAREHOUSE_SECRET_ID", "test/warehouse-loader")
        before = oids(warehouse)
        result = run_pipeline(s3, buckets, base_batch())
    finally:
        query(warehouse, "DROP OWNED BY etl_loader")
        query(warehouse, "DROP ROLE etl_loader")
    assert result["tables"]["fact_sales_order"] == 2
    assert oids(warehouse) == before
    fallbacks = [r for r in caplog.records if r.getMessage().startswith("foreign keys checked row by row")]
    assert len(fallbacks) == len(FACT_TABLES) and all(r.levelname == "INFO" for r in fallbacks)
