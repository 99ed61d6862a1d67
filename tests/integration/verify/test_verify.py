"""`verify` against real PostgreSQL and moto S3: each kind of difference, in flight, deletions, history."""
import pytest

import ingest

from tests.support.db import run_sql
from tests.support.pipeline import run_pipeline


def by_table(report):
    return {table.table: table for table in report.tables}


def test_a_freshly_loaded_warehouse_matches_every_table(loaded, check):
    source, warehouse, buckets = loaded
    report = check(source, warehouse, buckets["ingest"])
    assert report.exit_code == 0, report.to_dict()
    tables = by_table(report)
    assert set(tables) == {"dim_location", "dim_currency", "dim_design", "dim_payment_type",
                           "dim_transaction",
                           "dim_counterparty", "dim_staff", "fact_sales_order", "fact_purchase_order",
                           "fact_payment"}
    assert tables["fact_sales_order"].matched == 2 and tables["dim_location"].matched == 2
    assert all(h.matched and h.landed for h in report.history)


def test_a_corrupted_warehouse_row_is_named_with_its_table_and_id(loaded, check):
    source, warehouse, buckets = loaded
    run_sql(warehouse, "UPDATE dim_design SET design_name = 'Tampered' WHERE design_id = 1")
    run_sql(warehouse, "UPDATE fact_payment SET paid = NOT paid WHERE payment_id = 1")

    report = check(source, warehouse, buckets["ingest"])

    assert report.exit_code == 1
    tables = by_table(report)
    assert tables["dim_design"].ids["differing"] == [1] and tables["dim_design"].matched == 0
    assert tables["fact_payment"].ids["differing"] == [1]
    assert tables["dim_location"].mismatches == 0


def test_missing_and_extra_rows(loaded, check):
    source, warehouse, buckets = loaded
    run_sql(warehouse, "DELETE FROM fact_sales_order WHERE sales_order_id = 2")
    run_sql(warehouse, "DELETE FROM dim_currency WHERE currency_id = 2")
    run_sql(warehouse, "INSERT INTO dim_design VALUES (99, 'Extra', '/x', 'x.json')")

    report = check(source, warehouse, buckets["ingest"])

    tables = by_table(report)
    assert tables["dim_currency"].ids["missing"] == [2]
    assert tables["dim_design"].ids["extra"] == [99]
    assert tables["fact_sales_order"].ids["missing"] == [2]
    assert report.exit_code == 1
    # The fact's landed version is gone from the warehouse: the history check names it too.
    history = {h.table: h for h in report.history}
    assert [row_id for row_id, _ in history["fact_sales_order"].not_in_warehouse] == [2]


def test_changes_after_the_last_loaded_batch_are_in_flight_not_mismatches(loaded, check):
    source, warehouse, buckets = loaded
    run_sql(source, "UPDATE sales_order SET units_sold = 7, last_updated = localtimestamp WHERE "
                    "sales_order_id = 1")
    run_sql(source, "UPDATE address SET city = 'York', last_updated = localtimestamp WHERE address_id = 1")
    run_sql(source, "INSERT INTO currency (currency_code, created_at, last_updated) "
                    "VALUES ('EUR', localtimestamp, localtimestamp)")

    report = check(source, warehouse, buckets["ingest"])

    assert report.exit_code == 0, report.to_dict()
    tables = by_table(report)
    assert tables["fact_sales_order"].ids["in_flight"] == [1]
    assert tables["dim_location"].ids["in_flight"] == [1]
    # The address is the counterparty's legal address: its dimension row is in flight too.
    assert tables["dim_counterparty"].ids["in_flight"] == [1]
    assert tables["dim_currency"].ids["in_flight"] == [3]

    run_pipeline()
    assert check(source, warehouse, buckets["ingest"]).mismatches == 0
    assert all(not t.counts["in_flight"] for t in check(source, warehouse, buckets["ingest"]).tables)


@pytest.mark.cursor_only("the cursor does not see an update stamped below its window; CDC lands it")
def test_a_back_dated_update_is_a_mismatch(loaded, check):
    source, warehouse, buckets = loaded
    # Stamped below the window every later run reads: a cursor never sees it.
    run_sql(source, "UPDATE sales_order SET units_sold = 12345, last_updated = last_updated - "
                    "interval '2 days' "
                    "WHERE sales_order_id = 2")
    run_pipeline()

    report = check(source, warehouse, buckets["ingest"])

    assert report.exit_code == 1
    assert by_table(report)["fact_sales_order"].ids["differing"] == [2]


def test_deletions_recorded_or_not(loaded, check, monkeypatch):
    source, warehouse, buckets = loaded
    monkeypatch.setenv("MAX_DELETE_FRACTION", "1")  # 1 of 2 orders: not held by the mass-delete guard
    run_sql(source, "DELETE FROM sales_order WHERE sales_order_id = 2")

    # Deleted after the last run (still in its latest key set): in flight, not a mismatch.
    before = check(source, warehouse, buckets["ingest"])
    assert by_table(before)["fact_sales_order"].ids["in_flight"] == [2] and before.exit_code == 0
    # Detected by an ingest whose batch is not loaded yet: in flight too.
    ingest.lambda_handler({}, None)
    pending = check(source, warehouse, buckets["ingest"])
    assert by_table(pending)["fact_sales_order"].ids["in_flight"] == [2] and pending.pending_batches == 1

    run_pipeline()
    after = check(source, warehouse, buckets["ingest"])
    assert after.exit_code == 0, after.to_dict()
    orders = by_table(after)["fact_sales_order"]
    assert orders.deletions_recorded == 1 and orders.counts["extra"] == 0 and orders.matched == 1
    # History keeps the deleted order's version: still landed and held.
    assert {h.table: h.matched for h in after.history}["fact_sales_order"]


def test_a_quarantined_row_is_reported_as_such(loaded, check):
    source, warehouse, buckets = loaded
    run_sql(source, "UPDATE purchase_order SET agreed_delivery_date = '2024-02-30', last_updated "
                    "= localtimestamp")
    run_pipeline()

    report = check(source, warehouse, buckets["ingest"])

    assert report.exit_code == 0, report.to_dict()
    assert by_table(report)["fact_purchase_order"].ids["quarantined"] == [1]


def test_a_fact_version_never_landed_is_named_by_the_history_check(loaded, check):
    source, warehouse, buckets = loaded
    run_sql(warehouse, "INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, "
                       "last_updated_date, last_updated_time, sales_staff_id, counterparty_id, units_sold, "
                       "unit_price, currency_id, design_id, agreed_payment_date, agreed_delivery_date, "
                       "agreed_delivery_location_id) SELECT sales_order_id, created_date, created_time, "
                       "last_updated_date, '00:00:00.001', sales_staff_id, counterparty_id, "
                       "units_sold, unit_price, "
                       "currency_id, design_id, agreed_payment_date, agreed_delivery_date, "
                       "agreed_delivery_location_id FROM fact_sales_order WHERE sales_order_id = 1")

    report = check(source, warehouse, buckets["ingest"])

    history = {h.table: h for h in report.history}["fact_sales_order"]
    assert history.not_landed_count == 1 and history.not_landed[0][0] == 1
    assert report.exit_code == 1


def test_the_row_text_hash_of_older_servers_compares_the_same(loaded, check, monkeypatch):
    """PostgreSQL 11-13 have no hash_record_extended: verify then hashes each row's text, which must
    agree between the two databases as the typed hashes do."""
    import utils.verify.run as verify_run
    source, warehouse, buckets = loaded
    monkeypatch.setattr(verify_run, "_needs_text_hash", lambda *conns: True)
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0
    run_sql(warehouse, "UPDATE fact_sales_order SET unit_price = 9.99 WHERE sales_order_id = 2")
    run_sql(warehouse, "UPDATE dim_counterparty SET counterparty_legal_district = NULL")
    report = check(source, warehouse, buckets["ingest"])
    assert by_table(report)["fact_sales_order"].ids["differing"] == [2]
    # Its legal address's district is '' in totesys: NULL is a difference, in the row text too.
    assert by_table(report)["dim_counterparty"].ids["differing"] == [1]


def test_an_id_gone_from_totesys_that_no_run_saw_deleted_is_extra(loaded, check):
    """An id in the warehouse that totesys does not hold, that the latest ingest key set does not hold
    either and no pending batch deleted: a mismatch (here a row planted in the warehouse by hand)."""
    source, warehouse, buckets = loaded
    run_sql(warehouse, "INSERT INTO dim_design VALUES (77, 'Ghost', '/g', 'g.json')")
    report = check(source, warehouse, buckets["ingest"])
    assert by_table(report)["dim_design"].ids["extra"] == [77] and report.exit_code == 1


def copy_sales_order(warehouse, new_id):
    """A fact row of ``new_id`` copied from sales order 1 (extra: in no source table)."""
    run_sql(warehouse, "INSERT INTO fact_sales_order (sales_order_id, created_date, created_time, "
                       "last_updated_date, last_updated_time, sales_staff_id, counterparty_id, units_sold, "
                       "unit_price, currency_id, design_id, agreed_payment_date, agreed_delivery_date, "
                       "agreed_delivery_location_id, etl_load_order) "
                       "SELECT :i, created_date, created_time, last_updated_date, last_updated_time, "
                       "sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id, "
                       "agreed_payment_date, agreed_delivery_date, agreed_delivery_location_id, "
                       "etl_load_order FROM fact_sales_order WHERE sales_order_id = 1", i=new_id)


def test_differences_in_several_segments_are_each_narrowed_to_their_ids(loaded, check):
    """Ids far apart (other first-level segments of 65,536 ids, one negative) are each named."""
    source, warehouse, buckets = loaded
    for new_id in (-5, 70_000, 200_001):
        copy_sales_order(warehouse, new_id)
    run_sql(warehouse, "UPDATE fact_sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = 2")

    tables = by_table(check(source, warehouse, buckets["ingest"]))

    assert tables["fact_sales_order"].ids["extra"] == [-5, 70_000, 200_001]
    assert tables["fact_sales_order"].ids["differing"] == [2]
    assert tables["fact_sales_order"].matched == 1


def test_the_checks_on_a_second_warehouse_connection_report_the_same(loaded, check, monkeypatch):
    """With ``connect_warehouse`` the history and rollup checks run on a second connection, in the first
    one's snapshot, beside the table comparisons: the same report as one connection gives."""
    source, warehouse, buckets = loaded
    run_sql(warehouse, "UPDATE fact_payment SET paid = NOT paid WHERE payment_id = 1")
    run_sql(warehouse, "DELETE FROM fact_sales_order WHERE sales_order_id = 2")
    copy_sales_order(warehouse, 70_000)

    alone = check(source, warehouse, buckets["ingest"]).to_dict()
    beside = check(source, warehouse, buckets["ingest"], second=True).to_dict()

    assert beside == alone
    assert alone["mismatches"] > 0 and not alone["rollups"]["matched"]
    assert [h for h in alone["history"] if not h["matched"]]
