"""Adversarial: the value-aware fact versions (docs/DESIGN.md, "A version is its stamp and its values")
against parked rows, an upgraded warehouse and the history check. Hand-written landing batches through
the real transform and load handlers into a real PostgreSQL warehouse (moto S3)."""
import pyarrow as pa
import pytest

import load
import transform
from tests.support.batches import (T0, base_batch, later, payment, purchase_order, sales_order,
                                   write_ingest_batch)
from tests.support.db import run_sql
from tests.support.versions import (create_narrow_warehouse, design, history_and_rollups, load_killed_after,
                                    park_order_3, run_batch, sales_versions)
from utils.catalog.source import LANDING_SCHEMAS
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.load.schema import schema_statements

pytestmark = pytest.mark.slow


@pytest.fixture
def narrow_warehouse(pipeline_env, warehouse_url):
    """A warehouse that already exists with dim_design.design_name varchar(12): a longer design name is
    rejected, and an order referencing that design is parked until a fitting version arrives."""
    create_narrow_warehouse(warehouse_url)
    pipeline_env(warehouse_url=warehouse_url)
    return warehouse_url


def test_a_parked_version_fixed_under_its_stamp_loads_both_versions_once(s3, buckets, narrow_warehouse):
    """Order 3 is parked (its design was rejected) with 111 units; the operator fixes the design and the
    order's units in one go, forgetting the order's stamp. The next batch brings both: the parked version
    (111, the parking batch's order) and the fix (222, this batch's order). Two versions of one stamp,
    as if the design had never been missing: the history check finds each landed value-version once,
    the fix is current, the rollups agree."""
    park_order_3(s3, buckets)
    assert sales_versions(narrow_warehouse, 3) == []

    # Order 1 too gets a fix that kept its stamp: its two versions make the history check's sums differ,
    # so it compares value-versions (the path that names a version missing).
    run_batch(s3, buckets, later(5), {"design": [design(2, "Short name", at=later(4))],
                                      "sales_order": [sales_order(3, design_id=2, units_sold=222),
                                                      sales_order(1, units_sold=7)]})

    assert run_sql(narrow_warehouse, "SELECT units_sold FROM current_sales_order "
                   "WHERE sales_order_id = 3") == [[222]]
    assert [units for units, _ in sales_versions(narrow_warehouse, 1)] == [1001, 7]
    orders = [order for order, in run_sql(narrow_warehouse, "SELECT load_order FROM etl_load_ledger "
                                                            "ORDER BY load_order")]
    assert sales_versions(narrow_warehouse, 3) == [(111, orders[0]), (222, orders[1])]
    history, rollups = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched, (history.not_in_warehouse, history.not_landed)
    assert rollups == []

    # the same batch delivered again (a re-sync of an unchanged table): nothing more
    run_batch(s3, buckets, later(10), {"sales_order": [sales_order(3, design_id=2, units_sold=222)]})
    assert sales_versions(narrow_warehouse, 3) == [(111, orders[0]), (222, orders[1])]
    history, rollups = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched and rollups == []


def test_two_versions_parked_under_one_stamp_are_two_records_and_load_both(s3, buckets, narrow_warehouse):
    """Order 3 is parked (its design rejected) with 111 units; the next batch brings a fix of its units
    under the same stamp, still referencing the rejected design: both versions dangle, each its own parked
    record (docs/RELIABILITY.md defect 16; one record per stamp kept only the later). When the design
    arrives both load, each with the order of the batch that parked it: the source's current values (222)
    current, the 111 version in the history, as the landing zone holds it."""
    park_order_3(s3, buckets)
    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(3, design_id=2, units_sold=222)]})
    assert sales_versions(narrow_warehouse, 3) == []
    assert sorted(run_sql(narrow_warehouse, "SELECT (row_data ->> 'units_sold')::int FROM etl_rejected_rows "
                          "WHERE source_id = 3 AND resolved_batch_id IS NULL")) == [[111], [222]]

    run_batch(s3, buckets, later(10), {"design": [design(2, "Short name", at=later(9))]})

    assert run_sql(narrow_warehouse, "SELECT units_sold FROM current_sales_order "
                   "WHERE sales_order_id = 3") == [[222]]
    assert [units for units, _ in sales_versions(narrow_warehouse, 3)] == [111, 222]
    history, _ = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched, (history.not_in_warehouse, history.not_landed)


FACT_VERSIONS = {"fact_sales_order": "sales_order_id", "fact_purchase_order": "purchase_order_id",
                 "fact_payment": "payment_id"}


def indexes(url):
    return sorted(name for name, in run_sql(
        url, "SELECT indexname::text FROM pg_indexes WHERE indexname LIKE 'fact%version%'"))


def add_old_version_indexes(url):
    """The unique index (id, stamp) of a warehouse created before value-aware versions."""
    for fact, key in FACT_VERSIONS.items():
        run_sql(url, f"CREATE UNIQUE INDEX {fact}_version_key ON {fact} "  # nosec B608 - test SQL
                     f"({key}, last_updated_date, last_updated_time)")


OLD_INDEXES = sorted(f"{fact}_version_key" for fact in FACT_VERSIONS)
NEW_INDEXES = sorted(f"{fact}_version_order_key" for fact in FACT_VERSIONS)


def test_an_old_warehouse_upgraded_while_a_reader_reads_loads_each_version_once(
        s3, buckets, narrow_warehouse):
    """A warehouse created by the code before value-aware versions (unique (id, stamp)) meets a batch
    with an update that kept its stamp while a dashboard query holds its fact table: the index swap
    waits at most its lock timeout, fails and leaves everything as it was (the old index, no ledger row);
    the next run swaps the index and appends the version once, the re-read unchanged rows not at all."""
    run_batch(s3, buckets, T0, base_batch())
    for fact in FACT_VERSIONS:
        run_sql(narrow_warehouse, f"DROP INDEX {fact}_version_order_key")  # nosec B608 - test SQL
    add_old_version_indexes(narrow_warehouse)
    before = run_sql(narrow_warehouse, "SELECT sales_record_id, units_sold, etl_load_order "
                                       "FROM fact_sales_order ORDER BY 1")
    orders = [sales_order(1, units_sold=7), sales_order(2, units_sold=5000, currency_id=2)]
    write_ingest_batch(s3, buckets["ingest"], later(5),
                       {"sales_order": pa.Table.from_pylist(orders, schema=LANDING_SCHEMAS["sales_order"])})
    processed = transform.lambda_handler({}, None)

    reader = connect_to_db(credentials_from_url(narrow_warehouse))
    try:
        reader.run("START TRANSACTION")
        reader.run("SELECT count(*) FROM current_sales_order")
        with pytest.raises(Exception, match="lock timeout"):
            load.lambda_handler(processed, None)
        assert indexes(narrow_warehouse) == OLD_INDEXES
        assert run_sql(narrow_warehouse, "SELECT sales_record_id, units_sold, etl_load_order "
                                         "FROM fact_sales_order ORDER BY 1") == before
        assert run_sql(narrow_warehouse, "SELECT count(*) FROM etl_load_ledger")[0][0] == 1
    finally:
        reader.run("ROLLBACK")
        close_db_connection(reader)

    load.lambda_handler(processed, None)
    assert indexes(narrow_warehouse) == NEW_INDEXES
    assert [units for units, _ in sales_versions(narrow_warehouse, 1)] == [1001, 7]
    assert [units for units, _ in sales_versions(narrow_warehouse, 2)] == [5000]
    assert run_sql(narrow_warehouse, "SELECT units_sold FROM current_sales_order "
                   "WHERE sales_order_id = 1") == [[7]]
    history, rollups = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched and rollups == []


def test_a_warehouse_holding_both_version_indexes_loads_an_update_that_kept_its_stamp(
        s3, buckets, narrow_warehouse):
    """A deployment rolled back to the code before value-aware versions (its schema step re-creates the
    (id, stamp) index beside the new one), then forward again: the new code's schema step must drop the
    old index, or every batch with an update that kept its stamp fails on it, for ever."""
    run_batch(s3, buckets, T0, base_batch())
    add_old_version_indexes(narrow_warehouse)
    assert indexes(narrow_warehouse) == sorted(OLD_INDEXES + NEW_INDEXES)

    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(1, units_sold=7)]})

    assert indexes(narrow_warehouse) == NEW_INDEXES
    assert [units for units, _ in sales_versions(narrow_warehouse, 1)] == [1001, 7]
    history, rollups = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched and rollups == []


def test_a_batch_killed_before_its_commit_after_appending_and_re_marking_versions_retries_exactly_once(
        s3, buckets, narrow_warehouse, monkeypatch):
    """A batch that appends a version of a held stamp (order 2: 5000 -> 9) and re-marks a held version (order
    1: 1001 -> 7 -> 1001, all under one stamp) dies after its ledger row, before COMMIT: nothing of it
    stays (facts, load orders, rollups). The retry does all of it once; the same batch again, nothing."""
    run_batch(s3, buckets, T0, base_batch())
    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(1, units_sold=7)]})
    write_ingest_batch(s3, buckets["ingest"], later(10), {"sales_order": pa.Table.from_pylist(
        [sales_order(1, units_sold=1001), sales_order(2, units_sold=9, currency_id=2)],
        schema=LANDING_SCHEMAS["sales_order"])})
    processed = transform.lambda_handler({}, None)
    facts = "SELECT sales_record_id, units_sold, etl_load_order FROM fact_sales_order ORDER BY 1"
    rollup = "SELECT * FROM rollup_sales_daily ORDER BY 1, 2"
    before = run_sql(narrow_warehouse, facts), run_sql(narrow_warehouse, rollup)
    load_killed_after(monkeypatch, "record_batch", processed)
    assert (run_sql(narrow_warehouse, facts), run_sql(narrow_warehouse, rollup)) == before

    assert load.lambda_handler(processed, None)["batches"]
    orders = [order for order, in run_sql(narrow_warehouse, "SELECT load_order FROM etl_load_ledger "
                                                            "ORDER BY load_order")]
    assert sales_versions(narrow_warehouse, 1) == [(7, orders[1]), (1001, orders[2])]
    assert sales_versions(narrow_warehouse, 2) == [(5000, orders[0]), (9, orders[2])]
    history, rollups = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched and rollups == []
    after = run_sql(narrow_warehouse, facts)
    assert load.lambda_handler(processed, None)["batches"] == []  # in the ledger: skipped
    assert run_sql(narrow_warehouse, facts) == after


def test_a_quarantined_version_stays_recorded_beside_a_parked_fix_of_the_same_stamp(
        s3, buckets, narrow_warehouse):
    """Order 3 lands with a date that does not exist (quarantined); the fix keeps its stamp and references a
    design the warehouse rejected (parked). Both are versions of one stamp: the quarantined one must stay
    recorded once the parked one loads, or the history check names it missing for ever."""
    batch = base_batch()
    batch["sales_order"].append(sales_order(3, agreed_delivery_date="2024-02-30"))
    run_batch(s3, buckets, T0, batch)
    run_batch(s3, buckets, later(5), {"design": [design(2, "A design name far too long", at=later(4))],
                                      "sales_order": [sales_order(3, design_id=2)]})
    run_batch(s3, buckets, later(10), {"design": [design(2, "Short name", at=later(9))],
                                       "sales_order": [sales_order(1, units_sold=7)]})  # sums differ
    assert [units for units, _ in sales_versions(narrow_warehouse, 3)] == [1003]
    history, _ = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched, (history.not_in_warehouse, history.not_landed)


def test_two_quarantined_versions_of_one_stamp_stay_recorded_beside_the_fix(s3, buckets, narrow_warehouse):
    batch = base_batch()
    batch["sales_order"].append(sales_order(3, agreed_delivery_date="2024-02-30"))
    run_batch(s3, buckets, T0, batch)
    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(3, agreed_delivery_date="2024-02-31")]})
    run_batch(s3, buckets, later(10), {"sales_order": [sales_order(3), sales_order(1, units_sold=7)]})
    assert [units for units, _ in sales_versions(narrow_warehouse, 3)] == [1003]
    history, _ = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched, (history.not_in_warehouse, history.not_landed)


def records(url, source_id):
    """[(value key, parked, resolved)] of the etl_rejected_rows records of sales order ``source_id``."""
    return sorted(tuple(row) for row in run_sql(
        url, "SELECT value_key, row_data IS NOT NULL, resolved_batch_id IS NOT NULL FROM etl_rejected_rows "
             "WHERE source_table = 'sales_order' AND source_id = :i", i=source_id))


def test_an_old_warehouse_s_rejected_records_are_keyed_and_a_version_read_again_stays_one_record(
        s3, buckets, narrow_warehouse):
    """A warehouse created before value keys (one record per stamp, no value_key) holds a quarantined
    order (3, a date that does not exist) and a parked one (4, its design rejected). The next load's schema
    step adds the key and replaces the index: the parked record gets its row data's key, so re-parked it
    is the same record; the quarantined one, keyless, is taken by the same version read again (the
    overlap). Read once more, neither is recorded twice; when the design arrives order 4 loads and its
    record resolves, and the history check matches."""
    batch = base_batch()
    batch["design"].append(design(2, "A design name far too long"))
    batch["sales_order"] += [sales_order(3, agreed_delivery_date="2024-02-30"), sales_order(4, design_id=2)]
    run_batch(s3, buckets, T0, batch)
    for statement in ("DROP INDEX etl_rejected_rows_value_version_key",
                      "ALTER TABLE etl_rejected_rows DROP COLUMN value_key",
                      "CREATE UNIQUE INDEX etl_rejected_rows_version_key "
                      "ON etl_rejected_rows (source_table, source_id, last_updated)"):
        run_sql(narrow_warehouse, statement)

    again = {"sales_order": [sales_order(3, agreed_delivery_date="2024-02-30"), sales_order(4, design_id=2)]}
    assert run_batch(s3, buckets, later(5), again)["rejected_rows"] == 0
    assert run_sql(narrow_warehouse, "SELECT indexname::text FROM pg_indexes "
                                     "WHERE indexname LIKE 'etl_rejected_rows%version_key'") == \
        [["etl_rejected_rows_value_version_key"]]
    (quarantined_key, _, _), = quarantined = records(narrow_warehouse, 3)
    (parked_key, _, _), = parked = records(narrow_warehouse, 4)
    assert quarantined == [(quarantined_key, False, False)] and quarantined_key != ""
    assert parked == [(parked_key, True, False)] and parked_key != ""

    assert run_batch(s3, buckets, later(10), again)["rejected_rows"] == 0
    assert records(narrow_warehouse, 3) == quarantined and records(narrow_warehouse, 4) == parked
    run_batch(s3, buckets, later(15), {"design": [design(2, "Short name", at=later(14))]})
    assert records(narrow_warehouse, 4) == [(parked_key, True, True)]
    assert [units for units, _ in sales_versions(narrow_warehouse, 4)] == [1004]
    history, _ = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched, (history.not_in_warehouse, history.not_landed)


def test_a_blank_padded_warehouse_column_does_not_make_a_re_read_version_look_changed(
        s3, buckets, pipeline_env, warehouse_url):
    """An existing warehouse whose fact_purchase_order.item_code is character(20) (accepted: blank-padded
    text). The source's item code ends in a blank, which the padded column cannot tell from its padding:
    the overlap reading the order again must find its version held, not append it at every run; an item
    code changed under the same stamp is still a new version."""
    for statement in schema_statements():
        run_sql(warehouse_url, statement.replace("item_code varchar NOT NULL",
                                                 "item_code character(20) NOT NULL"))
    pipeline_env(warehouse_url=warehouse_url)
    batch = base_batch()
    batch["purchase_order"] = [purchase_order(1, item_code="AB12 ")]
    run_batch(s3, buckets, T0, batch)
    run_batch(s3, buckets, later(5), {"purchase_order": [purchase_order(1, item_code="AB12 ")]})
    run_batch(s3, buckets, later(10), {"purchase_order": [purchase_order(1, item_code="AB12 ")]})
    assert run_sql(warehouse_url, "SELECT rtrim(item_code) FROM fact_purchase_order") == [["AB12"]]

    run_batch(s3, buckets, later(15), {"purchase_order": [purchase_order(1, item_code="AB13 ")]})
    assert run_sql(warehouse_url, "SELECT rtrim(item_code) FROM fact_purchase_order "
                                  "ORDER BY purchase_record_id") == [["AB12"], ["AB13"]]


def test_new_ids_with_two_versions_in_one_batch_and_distinct_new_ids_keep_the_rollups_equal(
        s3, buckets, narrow_warehouse):
    """A batch of ids the warehouse has never seen, one of them in two versions (the rollups must count
    only its later one: the batch's ids are not distinct, so they are sorted for each id's latest), then
    a batch of distinct new ids (read without the sort: ``merge.ids_distinct``), then a re-read of a held
    version beside a new id (the held-version probe finds it in the staged range). Each time the rollups
    equal the current views and the history matches the landing zone."""
    run_batch(s3, buckets, T0, base_batch())
    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(10, at=later(1), units_sold=5),
                                                      sales_order(10, at=later(1), updated=later(2),
                                                                  units_sold=9),
                                                      sales_order(11, at=later(3))]})
    assert run_sql(narrow_warehouse, "SELECT units_sold FROM current_sales_order "
                   "WHERE sales_order_id = 10") == [[9]]
    assert [units for units, _ in sales_versions(narrow_warehouse, 10)] == [5, 9]
    history, rollups = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched and rollups == []

    run_batch(s3, buckets, later(10), {
        "sales_order": [sales_order(12, at=later(6)), sales_order(13, at=later(7), units_sold=4)],
        "payment": [payment(20, 1, at=later(8))]})
    assert run_sql(narrow_warehouse, "SELECT count(*), sum(units) FROM rollup_sales_daily") == \
        run_sql(narrow_warehouse, "SELECT count(DISTINCT (created_date, currency_id)), sum(units_sold) "
                                  "FROM current_sales_order")
    history, rollups = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched and rollups == []

    run_batch(s3, buckets, later(15), {
        "sales_order": [sales_order(12, at=later(6)), sales_order(14, at=later(12))]})
    assert [units for units, _ in sales_versions(narrow_warehouse, 12)] == [1012]
    history, rollups = history_and_rollups(s3, buckets["ingest"], narrow_warehouse)
    assert history.matched and rollups == []
