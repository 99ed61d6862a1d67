"""Adversarial: an update that leaves ``last_updated`` as it was (a hand-written fix that forgets the
stamp; docs/RELIABILITY.md defect 8). docs/DESIGN.md, "Rows the cursor cannot see": an update whose
``last_updated`` is "set to (or kept at) a time below the window" is found by ``totesys verify`` and
repaired by ``totesys resync``; in CDC mode the slot brings it. Exactly once all the same."""
import uuid

import pytest

from tests.support.db import run_sql
from tests.support.pipeline import run_pipeline


@pytest.mark.cursor_only("in CDC mode the update is in the slot, in flight for verify (the CDC case is "
                         "its own test below)")
def test_an_update_keeping_its_last_updated_is_repaired_by_resync(loaded, check):
    source, warehouse, buckets = loaded
    run_sql(source, "UPDATE sales_order SET units_sold = 4242 WHERE sales_order_id = 2")
    report = check(source, warehouse, buckets["ingest"])
    assert report.exit_code == 1
    assert {table.table: table for table in report.tables}["fact_sales_order"].ids["differing"] == [2]

    run_pipeline({"resync": ["sales_order"]})

    # The re-landed row has the stamp of the version held and other values: a new version, current.
    assert run_sql(warehouse, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 2") \
        == [[4242]]
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0


def fact_versions(warehouse, sales_order_id):
    """[(units_sold, etl_load_order)] of one sales order's fact rows, oldest record first."""
    return [tuple(row) for row in run_sql(
        warehouse, "SELECT units_sold, etl_load_order FROM fact_sales_order WHERE sales_order_id = :i "
                   "ORDER BY sales_record_id", i=sales_order_id)]


def current_units(warehouse, sales_order_id):
    return run_sql(warehouse, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = :i",
                   i=sales_order_id)[0][0]


def test_values_set_back_under_the_same_stamp_make_the_held_version_current_again(loaded, check):
    """A -> B -> A under one stamp, each repaired by a re-sync: B is appended, then A (held, not current)
    is re-marked with the batch's load order, not appended again; a third re-sync and a plain run append
    nothing (exactly once)."""
    source, warehouse, buckets = loaded
    original = current_units(warehouse, 2)
    run_sql(source, "UPDATE sales_order SET units_sold = 4242 WHERE sales_order_id = 2")
    run_pipeline({"resync": ["sales_order"]})
    run_sql(source, "UPDATE sales_order SET units_sold = :u WHERE sales_order_id = 2", u=original)
    run_pipeline({"resync": ["sales_order"]})

    assert current_units(warehouse, 2) == original
    versions = fact_versions(warehouse, 2)
    assert [units for units, _ in versions] == [original, 4242]
    assert versions[0][1] > versions[1][1]  # the held version re-marked after the one appended
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0

    run_pipeline({"resync": ["sales_order"]})
    run_pipeline()
    assert fact_versions(warehouse, 2) == versions
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0


def test_a_fact_version_held_twice_is_named_by_the_history_check(loaded, check):
    """Exactly once: a copy of a held fact row (same stamp and values, another load order) is a version
    the landing zone has once and the warehouse twice."""
    source, warehouse, buckets = loaded
    run_sql(warehouse, "INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, "
                       "last_updated_date, last_updated_time, sales_staff_id, counterparty_id, units_sold, "
                       "unit_price, currency_id, design_id, agreed_payment_date, agreed_delivery_date, "
                       "agreed_delivery_location_id, etl_load_order) "
                       "SELECT sales_order_id, created_date, created_time, last_updated_date, "
                       "last_updated_time, sales_staff_id, counterparty_id, units_sold, unit_price, "
                       "currency_id, design_id, agreed_payment_date, agreed_delivery_date, "
                       "agreed_delivery_location_id, etl_load_order - 1 FROM fact_sales_order "
                       "WHERE sales_order_id = 1")

    report = check(source, warehouse, buckets["ingest"])

    assert report.exit_code == 1
    history = {h.table: h for h in report.history}["fact_sales_order"]
    assert [row_id for row_id, _ in history.not_landed] == [1]
    assert history.not_in_warehouse_count == 0


@pytest.fixture
def cdc_loaded(pipeline_env, source_url, warehouse_url, monkeypatch):
    """The small source loaded in INGEST_MODE=cdc (the snapshot, then a run reading the slot)."""
    monkeypatch.setenv("INGEST_MODE", "cdc")
    monkeypatch.setenv("CDC_SLOT_NAME", f"t_resync_{uuid.uuid4().hex[:12]}")
    buckets = pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    run_pipeline()
    run_pipeline()
    return source_url, warehouse_url, buckets


def test_in_cdc_mode_an_update_keeping_its_last_updated_loads_and_a_resync_adds_nothing(cdc_loaded, check):
    """CDC mode: the slot carries the update (in flight, not a mismatch); the next run appends it as a new
    version of the stamp, current; a re-sync (a CDC snapshot) re-lands it and appends nothing."""
    source, warehouse, buckets = cdc_loaded
    run_sql(source, "UPDATE sales_order SET units_sold = 4242 WHERE sales_order_id = 2")
    report = check(source, warehouse, buckets["ingest"])
    assert report.exit_code == 0
    assert {t.table: t for t in report.tables}["fact_sales_order"].ids["in_flight"] == [2]

    run_pipeline()
    assert current_units(warehouse, 2) == 4242
    versions = fact_versions(warehouse, 2)
    assert len(versions) == 2
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0

    run_pipeline({"resync": ["sales_order"]})
    assert fact_versions(warehouse, 2) == versions
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0
