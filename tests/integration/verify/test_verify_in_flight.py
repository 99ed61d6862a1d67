"""What `verify` calls in flight is what the ingest brings without a repair (docs/RELIABILITY.md, defect 9):
the next cursor window of ``utils.ingest.zones`` (a zone moved back included), or the CDC slot's changes not
consumed yet; a row below every window that differs stays a mismatch beside them."""
import uuid

import pytest
from pg8000.native import identifier

from tests.support.db import run_sql
from tests.support.pipeline import run_pipeline
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url

# Stamped below every window the ingest reads: only `totesys resync` repairs it.
BACK_DATED = ("UPDATE sales_order SET units_sold = 12345, last_updated = last_updated - interval '2 days' "
              "WHERE sales_order_id = 2")


def set_zone(url, zone):
    """ALTER DATABASE ... SET timezone (the zone is a constant of this module)."""
    database = credentials_from_url(url)["database"]
    run_sql(url, f"ALTER DATABASE {identifier(database)} SET timezone = '{zone}'")


def write(url, sql):
    """Run ``sql`` in a session in the database's configured zone, as totesys's own writers do."""
    conn = connect_to_db(credentials=credentials_from_url(url), timezone=None)
    try:
        conn.run(sql)
    finally:
        close_db_connection(conn)


def by_table(report):
    return {table.table: table for table in report.tables}


@pytest.mark.cursor_only("the real mismatch beside it is a back-dated update, which the CDC slot carries"
                         " (in flight); the CDC case is its own test")
def test_a_row_changed_after_a_zone_change_backwards_is_in_flight_beside_a_real_mismatch(
        pipeline_env, source_url, warehouse_url, check):
    """Loaded in Asia/Tokyo; the zone moved back to UTC; a payment updated then (stamped in UTC, nine hours
    below the last run's Tokyo bound, yet inside the next window: UTC's offset is in play) and a back-dated
    update. The payment is in flight, the back-dated order differs (exit 1); after the next run the payment
    matches and the order still differs."""
    set_zone(source_url, "Asia/Tokyo")
    buckets = pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    run_pipeline()
    set_zone(source_url, "UTC")
    write(source_url, "UPDATE payment SET payment_amount = 111, last_updated = localtimestamp "
                      "WHERE payment_id = 1")
    write(source_url, BACK_DATED)

    tables = by_table(check(source_url, warehouse_url, buckets["ingest"]))

    assert tables["fact_payment"].ids["in_flight"] == [1]
    assert tables["fact_payment"].mismatches == 0
    assert tables["fact_sales_order"].ids["differing"] == [2]

    run_pipeline()
    report = check(source_url, warehouse_url, buckets["ingest"])
    assert report.exit_code == 1
    tables = by_table(report)
    assert tables["fact_payment"].counts["in_flight"] == 0 and tables["fact_payment"].mismatches == 0
    assert tables["fact_sales_order"].ids["differing"] == [2]


@pytest.fixture
def cdc_loaded(pipeline_env, source_url, warehouse_url, monkeypatch):
    """The small source loaded in INGEST_MODE=cdc (the snapshot, then a run reading the slot)."""
    monkeypatch.setenv("INGEST_MODE", "cdc")
    monkeypatch.setenv("CDC_SLOT_NAME", f"t_verify_{uuid.uuid4().hex[:12]}")
    buckets = pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    run_pipeline()
    run_pipeline()
    return buckets


def test_a_change_in_the_cdc_slot_is_in_flight_whatever_its_stamp_beside_a_real_mismatch(
        cdc_loaded, source_url, warehouse_url, check):
    """CDC mode: an update stamped 2023-01-01 (below every window) is in the slot, not consumed: in
    flight; a warehouse row changed by hand is a mismatch. The next CDC run lands the update (it becomes
    current: the load order) and the hand-changed row still differs."""
    write(source_url, "UPDATE payment SET payment_amount = 222, last_updated = '2023-01-01' "
                      "WHERE payment_id = 1")
    run_sql(warehouse_url, "UPDATE fact_sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = 1")

    report = check(source_url, warehouse_url, cdc_loaded["ingest"])

    assert report.exit_code == 1
    tables = by_table(report)
    assert tables["fact_payment"].ids["in_flight"] == [1]
    assert tables["fact_payment"].mismatches == 0
    assert tables["fact_sales_order"].ids["differing"] == [1]

    run_pipeline()
    tables = by_table(check(source_url, warehouse_url, cdc_loaded["ingest"]))
    assert tables["fact_payment"].counts["in_flight"] == 0 and tables["fact_payment"].mismatches == 0
    assert tables["fact_sales_order"].ids["differing"] == [1]


def test_a_cdc_state_whose_slot_is_gone_falls_back_to_the_cursor_rule(
        cdc_loaded, source_url, warehouse_url, check):
    """The slot dropped: nothing to peek. The cursor's rule applies: a row stamped now is in flight, one
    stamped 2023-01-01 is a mismatch."""
    run_sql(source_url, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE database = current_database()")
    write(source_url, "UPDATE sales_order SET units_sold = 333, last_updated = localtimestamp "
                      "WHERE sales_order_id = 1")
    write(source_url, "UPDATE payment SET payment_amount = 222, last_updated = '2023-01-01' "
                      "WHERE payment_id = 1")

    tables = by_table(check(source_url, warehouse_url, cdc_loaded["ingest"]))

    assert tables["fact_sales_order"].ids["in_flight"] == [1]
    assert tables["fact_payment"].ids["differing"] == [1]
