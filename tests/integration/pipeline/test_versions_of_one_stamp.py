"""Adversarial: value-aware fact versions (docs/DESIGN.md, "A version is its stamp and its values") through
the whole pipeline, `verify` and the rebuild: a parked order fixed under its own stamp (docs/RELIABILITY.md
defect 12) and values set back under one stamp (A -> B -> A, a re-marked version) are each in the history
once, and the rebuilt warehouse equals the incremental one row for row (load orders and record ids too)."""
import time

import boto3
import pyarrow as pa
import pytest

from tests.support.compare import contents, relations
from tests.support.db import connect, run_sql
from tests.support.pipeline import run_pipeline
from utils.catalog import source as source_catalogue, warehouse as warehouse_catalogue
from utils.db.connection import close_db_connection
from utils.rebuild.run import rebuild_warehouse

pytestmark = pytest.mark.slow

NEW_DESIGN = ("INSERT INTO design (design_id, created_at, design_name, file_location, file_name, "
              "last_updated) VALUES (2, localtimestamp, 'Steel', '/usr', 'steel.json', '2999-01-01')")
NEW_ORDER = ("INSERT INTO sales_order (sales_order_id, created_at, last_updated, design_id, staff_id, "
             "counterparty_id, units_sold, unit_price, currency_id, agreed_delivery_date, "
             "agreed_payment_date, agreed_delivery_location_id) VALUES (3, localtimestamp, localtimestamp, "
             "2, 1, 1, 111, 3.25, 1, '2024-12-01', '2024-12-02', 2)")


def versions(url, sales_order_id):
    return [row[0] for row in run_sql(
        url, "SELECT units_sold FROM fact_sales_order WHERE sales_order_id = :i "
             "ORDER BY etl_load_order, sales_record_id", i=sales_order_id)]


def current_units(url, sales_order_id):
    return run_sql(url, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = :i",
                   i=sales_order_id)[0][0]


def test_versions_of_one_stamp_reach_verify_and_the_rebuild_exactly_once(loaded, check, new_database):
    source, warehouse, buckets = loaded
    # Order 3 references a design stamped in the far future (not taken): the order is parked.
    run_sql(source, NEW_DESIGN)
    run_sql(source, NEW_ORDER)
    run_pipeline()
    assert versions(warehouse, 3) == []
    # The operator fixes the design's stamp and the order's units, forgetting the order's stamp, and
    # re-syncs: the parked version and the fix are two versions of one stamp, the fix current.
    run_sql(source, "UPDATE design SET last_updated = localtimestamp WHERE design_id = 2")
    run_sql(source, "UPDATE sales_order SET units_sold = 222 WHERE sales_order_id = 3")
    # Order 2 too gets a fix under its stamp, then is set back: A -> B -> A, the held version re-marked.
    original = current_units(warehouse, 2)
    run_sql(source, "UPDATE sales_order SET units_sold = 4242 WHERE sales_order_id = 2")
    run_pipeline({"resync": ["sales_order"]})
    assert versions(warehouse, 3) == [111, 222] and current_units(warehouse, 3) == 222
    run_sql(source, "UPDATE sales_order SET units_sold = :u WHERE sales_order_id = 2", u=original)
    run_pipeline({"resync": ["sales_order"]})
    assert versions(warehouse, 2) == [4242, original] and current_units(warehouse, 2) == original
    report = check(source, warehouse, buckets["ingest"])
    assert report.exit_code == 0, [h for h in report.history if not h.matched]

    rebuilt = new_database()
    conn = connect(rebuilt)
    try:
        rebuild_warehouse(conn, boto3.client("s3"), buckets["ingest"], buckets["processed"],
                          connect=lambda: connect(rebuilt))
    finally:
        close_db_connection(conn)
    assert relations(rebuilt) == relations(warehouse)
    for relation in relations(warehouse):
        assert contents(rebuilt, relation) == contents(warehouse, relation), relation


@pytest.mark.cursor_only("in CDC mode every update is in the slot: the window plays no part")
def test_an_update_keeping_a_stamp_inside_the_overlap_is_in_flight_and_the_next_run_loads_it(loaded, check):
    """A row updated (new stamp), loaded, then updated again keeping that stamp: the stamp lies inside the
    next window's overlap and the row's transaction is new, so the next plain run re-reads it and appends
    the new values (no re-sync needed); meanwhile verify calls it in flight, not a mismatch."""
    source, warehouse, buckets = loaded
    run_sql(source, "UPDATE sales_order SET units_sold = 5, last_updated = localtimestamp "
                    "WHERE sales_order_id = 1")
    run_pipeline()
    run_sql(source, "UPDATE sales_order SET units_sold = 6 WHERE sales_order_id = 1")
    report = check(source, warehouse, buckets["ingest"])
    assert report.exit_code == 0
    assert {t.table: t for t in report.tables}["fact_sales_order"].ids["in_flight"] == [1]

    run_pipeline()
    assert versions(warehouse, 1)[-2:] == [5, 6] and current_units(warehouse, 1) == 6
    run_pipeline()  # the overlap reads it once more: held, nothing appended
    assert versions(warehouse, 1)[-2:] == [5, 6] and len(versions(warehouse, 1)) == 3
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0


def test_a_future_row_loaded_once_the_clock_passes_it_is_one_version_for_the_history_check(
        loaded, check, monkeypatch):
    """A payment stamped ahead of the source clock by more than the tolerance is quarantined as a future
    row; once the clock passes its stamp the next run loads that same version (same stamp, same values).
    The landing zone holds it once, the warehouse once: verify must not count the quarantine record of a
    version the facts now hold as a second one."""
    source, warehouse, buckets = loaded
    monkeypatch.setenv("INGEST_FUTURE_TOLERANCE_SECONDS", "1")
    run_sql(source, "UPDATE payment SET payment_amount = 222, last_updated = localtimestamp + interval '2 s' "
                    "WHERE payment_id = 1")
    assert run_pipeline()["rejected_rows"] == 1
    stamp = run_sql(source, "SELECT last_updated FROM payment WHERE payment_id = 1")[0][0]
    while run_sql(source, "SELECT localtimestamp")[0][0] <= stamp:  # the source clock passes the stamp
        time.sleep(0.2)
    run_pipeline()
    assert run_sql(warehouse, "SELECT payment_amount::text FROM current_payment WHERE payment_id = 1") \
        == [["222.00"]]
    report = check(source, warehouse, buckets["ingest"])
    assert report.exit_code == 0, [h for h in report.history if not h.matched]


def add_payment_note(monkeypatch):
    """docs/DESIGN.md, "Adding a column": a nullable ``payment.payment_note`` in both catalogues (the fact
    takes a same-named source column by itself)."""
    note = pa.field("payment_note", pa.string(), nullable=True)
    payment = source_catalogue.SOURCE_SCHEMAS["payment"].append(note)
    monkeypatch.setitem(source_catalogue.SOURCE_SCHEMAS, "payment", payment)
    monkeypatch.setitem(source_catalogue.LANDING_SCHEMAS, "payment", source_catalogue.landing_schema(payment))
    fact = warehouse_catalogue.WAREHOUSE_SCHEMAS["fact_payment"].append(note)
    monkeypatch.setitem(warehouse_catalogue.WAREHOUSE_SCHEMAS, "fact_payment", fact)
    monkeypatch.setitem(warehouse_catalogue.PROCESSED_SCHEMAS, "fact_payment",
                        warehouse_catalogue.processed_schema("fact_payment", fact))


def test_a_fact_column_added_and_filled_under_kept_stamps_reaches_verify_once(loaded, check, monkeypatch):
    """A nullable column added to payment (and fact_payment) after the warehouse was built; its values
    filled in the source without a new stamp (a data migration) and re-synced: each filled row is a new
    version of its stamp, the others are held. verify's history check then reads landed files from before
    the column (without it) beside files with it: a file without it holds NULLs there, as the transform
    reads it, never a failure of the check."""
    source, warehouse, buckets = loaded
    run_sql(source, "ALTER TABLE payment ADD COLUMN payment_note text")
    add_payment_note(monkeypatch)
    run_sql(source, "UPDATE payment SET payment_note = 'late' WHERE payment_id = 1")
    before = run_sql(warehouse, "SELECT count(*) FROM fact_payment")[0][0]
    run_pipeline({"resync": ["payment"]})

    assert run_sql(warehouse, "SELECT payment_id, payment_note FROM current_payment ORDER BY 1")[0] \
        == [1, "late"]
    assert run_sql(warehouse, "SELECT count(*) FROM fact_payment")[0][0] == before + 1
    report = check(source, warehouse, buckets["ingest"])
    assert report.exit_code == 0, [h for h in report.history if not h.matched]
