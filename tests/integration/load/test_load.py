"""The load stage against a real PostgreSQL warehouse, on processed batches made by the transform."""
import io
import json
from datetime import date, time
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import load
import transform
from utils.load import merge, schema
from utils.errors import CorruptFileError, InvalidEventError, SchemaMismatchError, UnknownTableError
from utils.load.schema import LEDGER, schema_statements
from utils.aws.state import read_state
from utils.catalog.warehouse import WAREHOUSE_TABLES
from tests.support.batches import T0, address, base_batch, department, later, sales_order, write_ingest_batch
from tests.support.db import connect, run_sql
from utils.db.connection import close_db_connection
from utils.load.rollups import DEFINITION, compare_rollups, rollup_state

ALL_TABLES = WAREHOUSE_TABLES + (LEDGER,)


def table_names(url):
    return sorted(row[0] for row in run_sql(
        url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))


def counts(url):
    """Row count of every warehouse table (None for a table that does not exist)."""
    present = set(table_names(url))
    return {name: run_sql(url, f"SELECT count(*) FROM {name}")[0][0] if name in present else None  # nosec
            for name in ALL_TABLES}


@pytest.fixture
def warehouse(pipeline_env, warehouse_url):
    pipeline_env(warehouse_url=warehouse_url)
    return warehouse_url


def first_batch(s3, buckets):
    write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
    return transform.lambda_handler({}, None)


def test_first_load_creates_the_schema_and_loads_every_table(s3, buckets, warehouse):
    transformed = first_batch(s3, buckets)
    result = load.lambda_handler(transformed, None)
    assert result == {**transformed, "rejected_rows": 0, "rejected": {}}
    assert counts(warehouse) == {**transformed["tables"], LEDGER: 1}
    assert {"current_sales_order", "current_purchase_order", "current_payment"} <= set(table_names(warehouse))
    ledger = run_sql(warehouse, f"SELECT batch_id, manifest_key, row_counts FROM {LEDGER}")
    assert ledger == [["20241125T093015123000", "_batches/2024/11/25/093015123000.json",
                       transformed["tables"]]]
    row = run_sql(warehouse, "SELECT created_date, created_time, unit_price, agreed_delivery_date "
                  "FROM fact_sales_order WHERE sales_order_id = 1")
    assert row == [[date(2024, 11, 25), time(9, 30, 15, 123000), Decimal("2.50"), date(2024, 11, 28)]]
    assert run_sql(warehouse, "SELECT currency_name FROM dim_currency ORDER BY currency_id") == [
        ["Pound Sterling"], ["US Dollar"], ["Unknown currency (XQZ)"]]
    # Loading again, and loading with nothing new, adds nothing.
    assert load.lambda_handler(transformed, None) == {"batches": [], "tables": {}, "rejected_rows": 0,
                                                      "rejected": {}}
    assert counts(warehouse) == {**transformed["tables"], LEDGER: 1}


def test_changes_append_fact_versions_and_overwrite_dimensions(s3, buckets, warehouse):
    load.lambda_handler(first_batch(s3, buckets), None)
    write_ingest_batch(s3, buckets["ingest"], later(30), {
        "address": [address(1, at=later(20), city="York")],
        "department": [department(1, at=later(21), department_name="Sales")],
        "sales_order": [sales_order(1, at=T0, updated=later(25), units_sold=42)]})
    # The same order version again in the next batch (an ingest overlap) is recorded once.
    write_ingest_batch(s3, buckets["ingest"], later(60), {
        "sales_order": [sales_order(1, at=T0, updated=later(25), units_sold=42)]})
    transformed = transform.lambda_handler({}, None)
    result = load.lambda_handler(transformed, None)
    assert result["batches"] == ["20241125T100015123000", "20241125T103015123000"]
    assert result["tables"]["fact_sales_order"] == 1
    assert run_sql(warehouse, "SELECT units_sold, last_updated_time FROM fact_sales_order "
                   "WHERE sales_order_id = 1 ORDER BY sales_record_id") == [
        [1001, time(9, 30, 15, 123000)], [42, time(9, 55, 15, 123000)]]
    assert run_sql(warehouse, "SELECT sales_order_id, units_sold FROM current_sales_order ORDER BY 1") == [
        [1, 42], [2, 5000]]
    assert run_sql(warehouse, "SELECT location_id, city FROM dim_location ORDER BY 1") == [
        [1, "York"], [2, "Leeds"]]
    assert run_sql(warehouse, "SELECT counterparty_id, counterparty_legal_city FROM dim_counterparty "
                   "ORDER BY 1") == [[1, "York"], [2, "Leeds"], [3, "York"]]
    assert run_sql(warehouse, "SELECT staff_id, department_name FROM dim_staff ORDER BY 1") == [
        [1, "Sales"], [2, "Dept 2"], [3, "Sales"]]
    assert counts(warehouse)[LEDGER] == 3


def test_a_load_killed_before_commit_changes_nothing_and_the_retry_completes(s3, buckets, warehouse,
                                                                             monkeypatch, caplog):
    load.lambda_handler(first_batch(s3, buckets), None)
    write_ingest_batch(s3, buckets["ingest"], later(30), {
        "address": [address(2, at=later(20), city="Hull")],
        "sales_order": [sales_order(1, at=T0, updated=later(25), units_sold=42),
                        sales_order(9, at=later(26))]})
    transformed = transform.lambda_handler({}, None)
    before = counts(warehouse)
    real_record = merge.record_batch

    def killed(*args, **kwargs):
        raise RuntimeError("killed between staging and commit")
    monkeypatch.setattr(merge, "record_batch", killed)
    with pytest.raises(RuntimeError, match="killed between staging and commit"):
        load.lambda_handler(transformed, None)
    assert counts(warehouse) == before
    assert run_sql(warehouse, "SELECT city FROM dim_location WHERE location_id = 2") == [["Leeds"]]
    assert [r.levelname for r in caplog.records].count("CRITICAL") == 1
    monkeypatch.setattr(merge, "record_batch", real_record)
    assert load.lambda_handler(transformed, None)["batches"] == ["20241125T100015123000"]
    after = counts(warehouse)
    assert after["fact_sales_order"] == before["fact_sales_order"] + 2
    assert after[LEDGER] == 2
    assert run_sql(warehouse, "SELECT city FROM dim_location WHERE location_id = 2") == [["Hull"]]


def latest_manifest(s3, buckets):
    state, _ = read_state(s3, buckets["processed"], "transform")
    body = s3.get_object(Bucket=buckets["processed"], Key=state["manifest_key"])["Body"].read()
    return state["manifest_key"], json.loads(body)


def _replace_processed_file(s3, buckets, table, transform_body):
    _, manifest = latest_manifest(s3, buckets)
    key = manifest["tables"][table]["key"]
    body = s3.get_object(Bucket=buckets["processed"], Key=key)["Body"].read()
    s3.put_object(Bucket=buckets["processed"], Key=key, Body=transform_body(body))


def test_a_fact_version_staged_twice_is_appended_once(s3, buckets, warehouse):
    """A processed fact file holding each version twice (made by hand: the transform writes each once)
    loads each version once, as a version re-delivered in a later batch does."""
    first_batch(s3, buckets)

    def doubled(body):
        table = pq.read_table(io.BytesIO(body))
        return _parquet(pa.concat_tables([table, table]))

    _replace_processed_file(s3, buckets, "fact_sales_order", doubled)
    _, manifest = latest_manifest(s3, buckets)
    result = load.lambda_handler({"batches": [manifest["batch_id"]]}, None)
    assert result["tables"]["fact_sales_order"] == 2
    versions = "SELECT sales_order_id, count(*) FROM fact_sales_order GROUP BY 1 ORDER BY 1"
    assert run_sql(warehouse, versions) == [[1, 1], [2, 1]]


def test_no_insert_reads_the_table_it_grows(s3, buckets, warehouse, monkeypatch):
    """An INSERT INTO t whose SELECT reads t (an anti-join against the table being filled) can be planned
    as a sequential scan of t per row when t's statistics say empty, which it reads as it grows:
    quadratic (76 s instead of 0.15 s for dim_transaction at scale 10, after a VACUUM ANALYZE of the new
    warehouse). Every INSERT of a load, first and incremental, reads other tables only."""
    from utils.db.connection import Connection
    statements = []
    real_run = Connection.run

    def recording_run(self, sql, *args, **kwargs):
        statements.append(sql)
        return real_run(self, sql, *args, **kwargs)

    monkeypatch.setattr(Connection, "run", recording_run)
    load.lambda_handler(first_batch(s3, buckets), None)
    write_ingest_batch(s3, buckets["ingest"], later(30), {
        "address": [address(1, at=later(20), city="York")],
        "sales_order": [sales_order(1, at=T0, updated=later(25), units_sold=42)]})
    load.lambda_handler(transform.lambda_handler({}, None), None)
    inserts = [sql for sql in statements if sql.startswith("INSERT INTO ")]
    assert len(inserts) > 10
    for sql in inserts:
        table = sql.split()[2]
        assert f"FROM {table}" not in sql and f"USING {table}" not in sql, sql


# -- staging on a second connection (utils/load/staging.py) ------------------------------------------

def _stage_tables(url):
    return run_sql(url, "SELECT relname FROM pg_class WHERE relname LIKE 'etl\\_stage\\_%' ORDER BY 1")


def test_the_tables_are_staged_on_a_second_connection_and_the_stages_go_with_the_batch(
        s3, buckets, warehouse, monkeypatch, caplog):
    from utils.load import staging
    used = []
    real_stage = staging.ParallelStaging.stage

    def spy(self, conn, name):
        used.append(name)
        return real_stage(self, conn, name)

    monkeypatch.setattr(staging.ParallelStaging, "stage", spy)
    run_sql(warehouse, "CREATE TABLE etl_stage_dim_date (left_by text)")  # a crashed load's leftover
    transformed = first_batch(s3, buckets)
    assert load.lambda_handler(transformed, None)["tables"] == transformed["tables"]
    assert sorted(used) == sorted(transformed["tables"])
    assert _stage_tables(warehouse) == []
    assert "staging in the batch's own transaction" not in caplog.text


def test_without_a_staging_connection_the_batch_stages_in_its_own_transaction(
        s3, buckets, warehouse, monkeypatch, caplog):
    from utils.errors import DatabaseUnavailableError
    from utils.load import run as load_run

    def refused(*args, **kwargs):
        raise DatabaseUnavailableError("no second connection")

    real_connect = load_run.connect_to_db
    calls = []

    def connect_once(*args, **kwargs):  # the load's own connection works, the staging one does not
        calls.append(1)
        return real_connect(*args, **kwargs) if len(calls) == 1 else refused()

    monkeypatch.setattr(load_run, "connect_to_db", connect_once)
    transformed = first_batch(s3, buckets)
    assert load.lambda_handler(transformed, None)["tables"] == transformed["tables"]
    assert counts(warehouse) == {**transformed["tables"], LEDGER: 1}
    assert "staging in the batch's own transaction: the staging connection failed" in caplog.text


def test_a_stage_that_does_not_hold_what_was_copied_fails_the_batch_and_loads_nothing(
        s3, buckets, warehouse, monkeypatch):
    from utils.load import staging
    real = staging.ParallelStaging._stage

    def short_by_one(self, conn, name, table):
        rows = real(self, conn, name, table)
        return rows + 1 if name == "fact_sales_order" else rows

    monkeypatch.setattr(staging.ParallelStaging, "_stage", short_by_one)
    with pytest.raises(staging.StagingError, match="etl_stage_fact_sales_order holds 2 rows in the batch's "
                                                   "transaction, the COPY wrote 3"):
        load.lambda_handler(first_batch(s3, buckets), None)
    assert counts(warehouse)[LEDGER] == 0 and counts(warehouse)["fact_sales_order"] == 0


def _parquet(table):
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _drop_column(body):
    return _parquet(pq.read_table(io.BytesIO(body)).drop_columns(["units_sold"]))


def _mistype_column(body):
    table = pq.read_table(io.BytesIO(body))
    index = table.schema.get_field_index("unit_price")
    return _parquet(table.set_column(index, "unit_price", table["unit_price"].cast(pa.float64())))


@pytest.mark.parametrize("change, error, message", [
    (_drop_column, SchemaMismatchError, "fact_sales_order: column 'units_sold' is missing from "
                                        "s3://totesys-test-processed/fact_sales_order/"),
    (_mistype_column, SchemaMismatchError, "fact_sales_order: column 'unit_price' in "
                                           "s3://totesys-test-processed/fact_sales_order/"),
    (lambda body: body[: len(body) // 2], CorruptFileError, "fact_sales_order: s3://totesys-test-processed/"
                                                            "fact_sales_order/"),
])
def test_bad_processed_files_load_nothing(s3, buckets, warehouse, caplog, change, error, message):
    transformed = first_batch(s3, buckets)
    _replace_processed_file(s3, buckets, "fact_sales_order", change)
    with pytest.raises(error) as err:
        load.lambda_handler(transformed, None)
    assert str(err.value).startswith(message)
    if change is _mistype_column:
        assert str(err.value).endswith("has type double, expected decimal128(10, 2)")
    assert set(counts(warehouse).values()) == {0}
    critical = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(critical) == 1 and critical[0].error_type == error.__name__


@pytest.mark.parametrize("event, error, message", [
    ([], InvalidEventError, "load event must be a JSON object, got list"),
    (None, InvalidEventError, "load event must be a JSON object, got NoneType"),
    ({"tables": {"fact_sale": 3}}, UnknownTableError, "unknown warehouse table 'fact_sale': expected one of"),
    ({"tables": ["dim_date"]}, InvalidEventError, "load event: 'tables' must be an object of table: rows"),
    ({"batches": "x"}, InvalidEventError, "load event: 'batches' must be a list of batch ids"),
    ({"more_waiting": "yes"}, InvalidEventError, "load event: 'more_waiting' must be true or false"),
])
def test_bad_events_load_nothing(s3, buckets, warehouse, event, error, message):
    first_batch(s3, buckets)
    with pytest.raises(error) as err:
        load.lambda_handler(event, None)
    assert str(err.value).startswith(message)
    assert table_names(warehouse) == []


def test_processed_manifest_naming_an_unknown_table_loads_nothing(s3, buckets, warehouse):
    first_batch(s3, buckets)
    manifest_key, manifest = latest_manifest(s3, buckets)
    manifest["tables"]["fact_sales"] = {"key": "fact_sales/x.parquet", "rows": 1}
    s3.put_object(Bucket=buckets["processed"], Key=manifest_key, Body=json.dumps(manifest).encode())
    with pytest.raises(UnknownTableError, match="unknown warehouse table 'fact_sales'"):
        load.lambda_handler({}, None)
    assert set(counts(warehouse).values()) == {0}


@pytest.mark.parametrize("ddl, message", [
    ("CREATE TABLE dim_staff (staff_id text PRIMARY KEY, first_name varchar, last_name varchar, "
     "department_name varchar, location varchar, email_address varchar)",
     "warehouse table dim_staff: column 'staff_id' has type text, expected integer or bigint or smallint"),
    ("CREATE TABLE dim_location (location_id integer PRIMARY KEY, address_line_1 varchar, "
     "address_line_2 varchar, district varchar, city varchar, postal_code varchar, country varchar)",
     "warehouse table dim_location: column 'phone' is missing"),
    ("CREATE TABLE fact_payment (payment_record_id serial PRIMARY KEY, payment_id integer, "
     "created_date date, created_time time(0), last_updated_date date, last_updated_time time, "
     "transaction_id int, counterparty_id int, payment_amount numeric(10,2), currency_id int, "
     "payment_type_id int, paid boolean, payment_date date)",
     "warehouse table fact_payment: column 'created_time' has type time without time zone(0)"),
])
def test_incompatible_existing_warehouse_table_loads_and_creates_nothing(
        s3, buckets, warehouse, ddl, message):
    transformed = first_batch(s3, buckets)
    run_sql(warehouse, ddl)
    before = table_names(warehouse)
    with pytest.raises(SchemaMismatchError) as err:
        load.lambda_handler(transformed, None)
    assert str(err.value).startswith(message)
    assert table_names(warehouse) == before


def test_a_nullable_catalogue_column_missing_from_an_existing_warehouse_is_added_on_the_next_load(
        s3, buckets, warehouse):
    # A warehouse created before the catalogue gained dim_location.district (a nullable column).
    for statement in schema_statements():
        run_sql(warehouse, statement)
    run_sql(warehouse, "ALTER TABLE dim_location DROP COLUMN district CASCADE")
    transformed = first_batch(s3, buckets)
    assert load.lambda_handler(transformed, None)["batches"] == ["20241125T093015123000"]
    located = run_sql(warehouse, "SELECT count(*), count(district) FROM dim_location")[0]
    assert located[0] > 0 and located[1] > 0  # the column is back and the batch filled it
    # A second load finds nothing to add (ADD COLUMN IF NOT EXISTS, never twice).
    assert load.lambda_handler({}, None)["batches"] == []


def test_existing_warehouse_with_the_line2_spelling_is_loaded(s3, buckets, warehouse):
    for statement in schema_statements():
        run_sql(warehouse, statement.replace("counterparty_legal_address_line_2",
                                             "counterparty_legal_address_line2"))
    transformed = first_batch(s3, buckets)
    assert load.lambda_handler(transformed, None)["batches"] == ["20241125T093015123000"]
    assert run_sql(warehouse, "SELECT counterparty_id, counterparty_legal_address_line2 "
                   "FROM dim_counterparty ORDER BY 1") == [[1, None], [2, "Unit 5"], [3, None]]


def _without_load_order(warehouse):
    """Turn a loaded warehouse back into one created before the load order (docs/RELIABILITY.md defect 3):
    no sequence, no load order columns, current views ordered by last_updated, rollups of definition 1."""
    views = [statement for statement in schema_statements()
             if "CREATE OR REPLACE VIEW current_" in statement]
    assert len(views) == 3
    run_sql(warehouse, "DROP VIEW current_sales_order, current_purchase_order, current_payment")
    for table in ("fact_sales_order", "fact_purchase_order", "fact_payment"):
        run_sql(warehouse, f"ALTER TABLE {table} DROP COLUMN etl_load_order")  # nosec B608 - test SQL
    run_sql(warehouse, "ALTER TABLE etl_load_ledger DROP COLUMN load_order")
    run_sql(warehouse, "ALTER TABLE etl_dimension_version DROP COLUMN load_order")
    run_sql(warehouse, "DROP SEQUENCE etl_load_order_seq")
    for view in views:
        run_sql(warehouse, view.replace("etl_load_order DESC, ", ""))
    run_sql(warehouse, "UPDATE etl_rollup_state SET definition = 1")


def test_an_existing_warehouse_without_the_load_order_is_migrated_by_the_next_load(s3, buckets, warehouse):
    load.lambda_handler(first_batch(s3, buckets), None)
    _without_load_order(warehouse)
    # The next batch brings order 1 stamped before its version held (the source's clock went back) and
    # address 1 likewise.
    write_ingest_batch(s3, buckets["ingest"], later(30), {
        "address": [address(1, at=later(-20), city="York")],
        "sales_order": [sales_order(1, at=later(-20), updated=later(-10), units_sold=42)]})
    assert load.lambda_handler(transform.lambda_handler({}, None), None)["tables"]["fact_sales_order"] == 1

    assert run_sql(warehouse, "SELECT units_sold, etl_load_order FROM fact_sales_order "
                   "WHERE sales_order_id = 1 ORDER BY sales_record_id") == [[1001, 0], [42, 1]]
    assert run_sql(warehouse, "SELECT batch_id, load_order FROM etl_load_ledger ORDER BY batch_id") == [
        ["20241125T093015123000", None], ["20241125T100015123000", 1]]
    assert run_sql(warehouse, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 1") == [[42]]
    assert run_sql(warehouse, "SELECT city FROM dim_location WHERE location_id = 1") == [["York"]]
    # every other current row is what it was: the rows loaded before have order 0
    assert run_sql(warehouse, "SELECT count(*) FROM current_payment WHERE etl_load_order = 0")[0][0] > 0
    conn = connect(warehouse)
    try:
        assert {mark.definition for mark in rollup_state(conn).values()} == {DEFINITION}
        assert compare_rollups(conn) == []
    finally:
        close_db_connection(conn)


def test_schema_file_is_shipped_inside_the_package_and_matches_sql_folder():
    from pathlib import Path
    shipped = schema.SCHEMA_FILE
    assert shipped.parent.parent.parent.name == "utils"  # src/utils/catalog/sql: inside the Lambda zip
    assert (Path(__file__).resolve().parents[3] / "sql" / "warehouse_schema.sql").read_text() \
        == shipped.read_text()
    # the tables, the ledger, three version indexes (and the drops of the three they replaced), three
    # views, etl_rejected_rows with its index (and, for a warehouse created before value keys, its
    # value_key column, the parked records' keys and the drop of the index replaced), etl_dimension_version,
    # etl_deleted_rows with its two indexes, deleted_dimension_rows, etl_suspended_foreign_key, the load
    # order (its sequence, the ledger's, etl_dimension_version's and the three facts' columns for a
    # warehouse created before it)
    assert len(schema_statements()) == len(WAREHOUSE_TABLES) + 1 + 3 + 3 + 3 + 2 + 3 + 1 + 3 + 1 + 1 + 6
