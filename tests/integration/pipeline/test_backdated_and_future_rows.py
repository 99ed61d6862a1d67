"""Rows the last_updated cursor cannot see (issue 19): backdated new keys land whatever their last_updated
and close their deletions; future rows are quarantined once, never block the window, never poison a
dimension's version, and their fix loads. Scale-1 data, real PostgreSQL, moto S3."""
import boto3
import pytest

import ingest
import load
import transform
from tests.support.db import run_sql as query
from tests.support.ingest import manifest_chain, read_table
from tests.support.ingest_mode import cdc_session
from utils.aws.state import read_state
from utils.config import load_settings
from utils.errors import ConfigError

pytestmark = pytest.mark.slow

ORDER_COLUMNS = ("created_at, design_id, staff_id, counterparty_id, units_sold, unit_price, currency_id, "
                 "agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id")


def run_pipeline(event=None):
    files = ingest.lambda_handler(event or {}, None)
    return files, load.lambda_handler(transform.lambda_handler(files, None), None)


def rows(url, sql, **params):
    return sorted(tuple(row) for row in query(url, sql, **params))


@pytest.fixture
def loaded(totesys_url, warehouse_url, pipeline_env):
    """Scale-1 totesys loaded once into the warehouse; returns (source, warehouse)."""
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()
    return totesys_url, warehouse_url


def test_a_restore_from_backup_and_a_backdated_new_id_reconcile_exactly(loaded):
    source, warehouse = loaded
    total = query(source, "SELECT count(*) FROM payment")[0][0]
    query(source, "CREATE TABLE payment_backup AS SELECT * FROM payment")
    query(source, "TRUNCATE payment")
    run_pipeline()  # a table emptied: its deletions are held (MAX_DELETE_FRACTION) until approved
    assert run_pipeline({"approve_deletes": ["payment"]})[1]["deleted"] == {"payment": total}
    assert query(warehouse, "SELECT count(*) FROM current_payment") == [[0]]

    # The restore keeps every original timestamp, all far below the window; a new order is back-dated.
    query(source, "INSERT INTO payment SELECT * FROM payment_backup")
    query(source, f"INSERT INTO sales_order (sales_order_id, last_updated, {ORDER_COLUMNS}) "  # nosec B608
                  f"SELECT 999999, '2023-01-01', {ORDER_COLUMNS} FROM sales_order WHERE sales_order_id = 1")
    files, result = run_pipeline()

    assert result["tables"]["fact_sales_order"] == 1 and "deleted_rows" not in result
    assert query(warehouse, "SELECT count(*) FROM current_payment") == [[total]]
    open_deletions = "SELECT count(*) FROM etl_deleted_rows WHERE reinserted_batch_id IS NULL"
    assert query(warehouse, open_deletions) == [[0]]
    assert rows(warehouse, "SELECT payment_id, last_updated_date + last_updated_time FROM current_payment") \
        == rows(source, "SELECT payment_id, last_updated FROM payment")
    backdated = query(source, "SELECT timestamp '2023-01-01'")[0][0]
    assert rows(warehouse, "SELECT sales_order_id, last_updated_date + last_updated_time "
                           "FROM current_sales_order WHERE sales_order_id = 999999") == [(999999, backdated)]
    # The history holds each payment version once: the restored rows were versions it already had.
    assert query(warehouse, "SELECT count(*) FROM fact_payment") == \
        query(warehouse, "SELECT count(DISTINCT (payment_id, last_updated_date, last_updated_time)) "
                         "FROM fact_payment")
    # Landed once: the next run finds nothing new.
    assert run_pipeline()[0] == {}


def test_only_the_new_keys_below_the_window_are_taken_and_only_once(loaded, buckets):
    source, _ = loaded
    old = query(source, "SELECT min(last_updated) FROM sales_order")[0][0]
    # an existing row back-dated: the cursor cannot see it (documented: totesys resync repairs it)
    query(source, "UPDATE sales_order SET units_sold = 1, last_updated = :old WHERE sales_order_id = 2",
          old=old)
    query(source, f"INSERT INTO sales_order (sales_order_id, last_updated, {ORDER_COLUMNS}) "  # nosec B608
                  f"SELECT 999998, :old, {ORDER_COLUMNS} FROM sales_order WHERE sales_order_id = 1", old=old)
    files = ingest.lambda_handler({"tables_to_query": ["sales_order"]}, None)
    landed = read_table(boto3.client("s3"), buckets["ingest"], files["sales_order"])
    # CDC (make test-cdc) reads the back-dated update too: it follows commits, not stamps
    assert sorted(landed["sales_order_id"].to_pylist()) == ([2, 999998] if cdc_session() else [999998])
    assert ingest.lambda_handler({"tables_to_query": ["sales_order"]}, None) == {}


def test_future_rows_are_quarantined_once_never_block_the_window_and_their_fix_loads(loaded):
    source, warehouse = loaded
    staff_before = query(warehouse, "SELECT first_name FROM dim_staff WHERE staff_id = 1")
    query(source, "UPDATE sales_order SET units_sold = 7, last_updated = '2099-01-01' "
                  "WHERE sales_order_id = 3")
    query(source, "UPDATE sales_order SET units_sold = 8, last_updated = localtimestamp + interval '2 hours' "
                  "WHERE sales_order_id = 4")
    query(source, "UPDATE sales_order SET units_sold = 9, last_updated = '12345-01-01' "
                  "WHERE sales_order_id = 5")
    query(source, "UPDATE staff SET first_name = 'Future', last_updated = '2099-01-01' WHERE staff_id = 1")
    query(source, "UPDATE sales_order SET units_sold = 10, last_updated = localtimestamp "
                  "WHERE sales_order_id = 6")

    _, result = run_pipeline()
    assert result["rejected"] == {"sales_order": 3, "staff": 1}  # the data-quality alert's trigger
    reasons = query(warehouse, "SELECT source_table, source_id, column_name, reason FROM etl_rejected_rows "
                               "ORDER BY 1, 2")
    assert [row[:3] for row in reasons] == [
        ["sales_order", 3, "last_updated"], ["sales_order", 4, "last_updated"],
        ["sales_order", 5, "last_updated"], ["staff", 1, "last_updated"]]
    assert all("ahead of the source clock" in row[3] for row in reasons)
    # nothing of them in the warehouse; the normal change beside them loaded
    assert query(warehouse, "SELECT count(*) FROM fact_sales_order WHERE units_sold IN (7, 8, 9)") == [[0]]
    assert query(warehouse, "SELECT count(*) FROM fact_sales_order WHERE units_sold = 10") == [[1]]
    assert query(warehouse, "SELECT first_name FROM dim_staff WHERE staff_id = 1") == staff_before
    assert query(warehouse, "SELECT last_updated < '2099-01-01' FROM etl_dimension_version "
                            "WHERE table_name = 'dim_staff' AND source_id = 1") == [[True]]

    # Landed once: the next run neither lands nor rejects them again; a later change still flows.
    query(source, "UPDATE sales_order SET units_sold = 11, last_updated = localtimestamp "
                  "WHERE sales_order_id = 7")
    files, result = run_pipeline()
    assert result["rejected_rows"] == 0 and result["tables"]["fact_sales_order"] == 1
    assert list(files) == ["sales_order"]

    # The fix (a correct timestamp) loads, into the fact history and the dimension.
    query(source, "UPDATE staff SET first_name = 'Fixed', last_updated = localtimestamp WHERE staff_id = 1")
    query(source, "UPDATE sales_order SET last_updated = localtimestamp WHERE sales_order_id IN (3, 5)")
    _, result = run_pipeline()
    assert result["rejected_rows"] == 0
    assert query(warehouse, "SELECT first_name FROM dim_staff WHERE staff_id = 1") == [["Fixed"]]
    assert rows(warehouse, "SELECT sales_order_id, units_sold FROM current_sales_order "
                           "WHERE sales_order_id IN (3, 5)") == [(3, 7), (5, 9)]


@pytest.mark.cursor_only("a row within the tolerance waits for the cursor's window; CDC lands it at once "
                         "(CDC's future rows: tests/integration/ingest/cdc/test_cdc_adversarial.py)")
def test_the_future_bound_is_recorded_per_table_and_follows_the_tolerance(loaded, buckets, monkeypatch):
    source, _ = loaded
    s3 = boto3.client("s3")
    state, _ = read_state(s3, buckets["ingest"], "ingest")
    entry = state["tables"]["sales_order"]
    gap = query(source, "SELECT CAST(:f AS timestamp) - CAST(:h AS timestamp)",
                f=entry["future_from"], h=entry["high"])[0][0]
    assert gap.total_seconds() == 300  # the default tolerance, UTC: no daylight-saving shift
    # a row 2 minutes ahead is within the tolerance: it waits for the clock, nothing is rejected
    query(source, "UPDATE sales_order SET last_updated = localtimestamp + interval '2 minutes' "
                  "WHERE sales_order_id = 3")
    assert run_pipeline()[1]["rejected_rows"] == 0
    monkeypatch.setenv("INGEST_FUTURE_TOLERANCE_SECONDS", "30")
    files, result = run_pipeline()
    assert result["rejected"] == {"sales_order": 1}
    manifest = manifest_chain(s3, buckets["ingest"])[-1]
    assert manifest["tables"]["sales_order"]["future_from"] > manifest["tables"]["sales_order"]["high"]


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_bad_future_tolerance_is_a_clear_config_error(monkeypatch, value):
    monkeypatch.setenv("INGEST_BUCKET", "i")
    monkeypatch.setenv("PROCESSED_BUCKET", "p")
    monkeypatch.setenv("INGEST_FUTURE_TOLERANCE_SECONDS", value)
    with pytest.raises(ConfigError, match=f"INGEST_FUTURE_TOLERANCE_SECONDS .*{value!r}"):
        load_settings()


def test_new_keys_and_their_runs():
    import numpy as np

    from utils.ingest.backdated import key_runs, new_keys
    previous = np.array([1, 2, 3, 7], dtype=np.int32)
    current = np.array([1, 2, 3, 4, 5, 7, 9, 10, 20], dtype=np.int32)
    found = new_keys(previous, current)
    assert found.tolist() == [4, 5, 9, 10, 20]
    assert key_runs(found) == ([4, 9, 20], [5, 10, 20])
    assert new_keys(None, current).tolist() == [] and key_runs([]) == ([], [])


def test_a_batch_without_a_future_bound_splits_nothing():
    from tests.support.batches import sales_order, source_table
    from utils.transform.quarantine import split_future_rows
    table = source_table("sales_order", [sales_order(1)])
    kept, rejected = split_future_rows("sales_order", table, None)
    assert kept.num_rows == 1 and rejected.num_rows == 0
