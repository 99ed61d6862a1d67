"""Adversarial: issue 24's fifth pass (a batch of distinct ids appends without the rollups' sort of its new
rows, ``merge.ids_distinct``; the held-version DELETE reads only the staged ids up to the greatest id the
fact holds in the staged range, ``merge._remark_held``) against parked rows of the batch's ids, restored
versions at the edges of the staged range, updates that kept their stamp, a kill before COMMIT and a
rebuild in the batch's transaction. After each batch the rollups equal the current views and verify's
history check matches the landing zone."""
import pyarrow as pa
import pytest

import load
import transform
from tests.support.versions import (create_narrow_warehouse, design, history_and_rollups, load_killed_after,
                                    park_order_3, run_batch, sales_versions)
from tests.support.batches import T0, base_batch, later, payment, sales_order, write_ingest_batch
from tests.support.db import run_sql
from utils.catalog.source import LANDING_SCHEMAS
from utils.load import merge, rollups

pytestmark = pytest.mark.slow


@pytest.fixture
def narrow_warehouse(pipeline_env, warehouse_url):
    """A warehouse whose dim_design.design_name is varchar(12): an order referencing a design with a longer
    name is parked until a fitting version arrives (as in test_version_attacks)."""
    create_narrow_warehouse(warehouse_url)
    pipeline_env(warehouse_url=warehouse_url)
    return warehouse_url


def assert_consistent(s3, buckets, url):
    history, differences = history_and_rollups(s3, buckets["ingest"], url)
    assert history.matched, (history.not_in_warehouse, history.not_landed)
    assert differences == []


def current_units(url):
    return dict(map(tuple, run_sql(url, "SELECT sales_order_id, units_sold FROM current_sales_order")))


def test_a_parked_version_loading_beside_the_batch_s_later_version_of_its_id_is_counted_once(
        s3, buckets, narrow_warehouse):
    """Order 3 is parked (its design rejected). The batch that brings the design also brings a later version
    of order 3 and a new order 6: the batch's own ids are distinct, but the rows it appends hold id 3 twice
    (the parked version and the later one), both new to the rollups (above their max id). The rollups must
    count order 3 once, at its later version."""
    park_order_3(s3, buckets)
    assert sales_versions(narrow_warehouse, 3) == []

    run_batch(s3, buckets, later(5), {"design": [design(2, "Short name", at=later(4))],
                                      "sales_order": [sales_order(3, design_id=2, updated=later(3),
                                                                  units_sold=222),
                                                      sales_order(6, at=later(4))]})

    assert [units for units, _ in sales_versions(narrow_warehouse, 3)] == [111, 222]
    assert current_units(narrow_warehouse) == {1: 1001, 2: 5000, 3: 222, 6: 1006}
    assert_consistent(s3, buckets, narrow_warehouse)


def test_two_parked_versions_of_one_id_loading_in_a_batch_without_that_fact_are_counted_once(
        s3, buckets, narrow_warehouse):
    """Order 3 is parked twice (two versions under two stamps, each by its own batch); the batch that
    brings the design has no sales orders at all (its fact table absent: ``ids_distinct`` of no table is
    true). The two parked versions both append; the rollups count order 3 once, at the later version."""
    park_order_3(s3, buckets)
    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(3, design_id=2, updated=later(2),
                                                                  units_sold=222)]})
    assert sales_versions(narrow_warehouse, 3) == []

    run_batch(s3, buckets, later(10), {"design": [design(2, "Short name", at=later(9))]})

    orders = [order for order, in run_sql(narrow_warehouse, "SELECT load_order FROM etl_load_ledger "
                                                            "ORDER BY load_order")]
    assert sales_versions(narrow_warehouse, 3) == [(111, orders[0]), (222, orders[1])]
    assert current_units(narrow_warehouse)[3] == 222
    assert_consistent(s3, buckets, narrow_warehouse)


def test_restored_versions_at_both_edges_of_the_held_range_and_a_kept_stamp_change_beside_new_ids(
        s3, buckets, narrow_warehouse):
    """A re-sync after a restore from backup brings, with new ids above everything held (50, 51) and an
    id in a gap (4): order 1's first version (the staged range's lower edge), order 5's first version (the
    greatest id the warehouse holds: the upper edge of the range the held-version DELETE reads), both held
    while a later version is current, so both are re-marked current, not appended; order 2 changed under
    its current stamp (a new version, appended); order 3 read again unchanged (held and current: nothing).
    The same batch's rows delivered once more change nothing."""
    batch = base_batch()
    batch["sales_order"] += [sales_order(3), sales_order(5, units_sold=55)]
    run_batch(s3, buckets, T0, batch)
    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(1, updated=later(1), units_sold=7),
                                                      sales_order(5, updated=later(1), units_sold=56)]})
    assert current_units(narrow_warehouse) == {1: 7, 2: 5000, 3: 1003, 5: 56}

    resync = [sales_order(1), sales_order(2, units_sold=5001, currency_id=2), sales_order(3),
              sales_order(4, at=later(6)), sales_order(5, units_sold=55), sales_order(50, at=later(6)),
              sales_order(51, at=later(6), units_sold=3)]
    run_batch(s3, buckets, later(10), {"sales_order": resync})

    orders = [order for order, in run_sql(narrow_warehouse, "SELECT load_order FROM etl_load_ledger "
                                                            "ORDER BY load_order")]
    assert sales_versions(narrow_warehouse, 1) == [(7, orders[1]), (1001, orders[2])]
    assert sales_versions(narrow_warehouse, 5) == [(56, orders[1]), (55, orders[2])]
    assert sales_versions(narrow_warehouse, 2) == [(5000, orders[0]), (5001, orders[2])]
    assert sales_versions(narrow_warehouse, 3) == [(1003, orders[0])]
    assert current_units(narrow_warehouse) == {1: 1001, 2: 5001, 3: 1003, 4: 1004, 5: 55, 50: 1050, 51: 3}
    assert_consistent(s3, buckets, narrow_warehouse)

    facts = "SELECT sales_record_id, units_sold, etl_load_order FROM fact_sales_order ORDER BY 1"
    before = run_sql(narrow_warehouse, facts)
    run_batch(s3, buckets, later(15), {"sales_order": resync})
    assert run_sql(narrow_warehouse, facts) == before
    assert_consistent(s3, buckets, narrow_warehouse)


def test_a_backfill_batch_killed_after_its_rollups_before_commit_retries_exactly_once(
        s3, buckets, narrow_warehouse, monkeypatch):
    """A batch of distinct ids (new orders and payments above everything held, a restored version at the
    staged range's lower edge) dies after the rollups' update, before COMMIT: facts, load orders and
    rollups stay as they were. The retry appends each version once and re-marks the restored one; the
    rollups equal the current views; the batch again is skipped."""
    run_batch(s3, buckets, T0, base_batch())
    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(2, updated=later(1), units_sold=9,
                                                                  currency_id=2)]})
    write_ingest_batch(s3, buckets["ingest"], later(10), {
        "sales_order": pa.Table.from_pylist(
            [sales_order(2, units_sold=5000, currency_id=2)]
            + [sales_order(order_id, at=later(6)) for order_id in range(100, 140)],
            schema=LANDING_SCHEMAS["sales_order"]),
        "payment": pa.Table.from_pylist([payment(payment_id, 1, at=later(7)) for payment_id in range(30, 60)],
                                        schema=LANDING_SCHEMAS["payment"])})
    processed = transform.lambda_handler({}, None)
    facts = ("SELECT sales_record_id, units_sold, etl_load_order FROM fact_sales_order ORDER BY 1",
             "SELECT payment_record_id, etl_load_order FROM fact_payment ORDER BY 1")
    rollup_tables = [f"SELECT * FROM {table} ORDER BY 1, 2, 3"  # nosec B608 - fixed names
                     for table in rollups.ROLLUP_TABLES if table not in (rollups.STATE, rollups.DESIGN_NAMES)]

    def snapshot():
        return [run_sql(narrow_warehouse, sql) for sql in facts + tuple(rollup_tables)
                + ("SELECT fact_table, last_record_id, max_id FROM etl_rollup_state ORDER BY 1",)]
    before = snapshot()
    load_killed_after(monkeypatch, "update_rollups", processed)
    assert snapshot() == before

    assert load.lambda_handler(processed, None)["batches"]
    orders = [order for order, in run_sql(narrow_warehouse, "SELECT load_order FROM etl_load_ledger "
                                                            "ORDER BY load_order")]
    assert sales_versions(narrow_warehouse, 2) == [(9, orders[1]), (5000, orders[2])]
    assert run_sql(narrow_warehouse, "SELECT count(*), count(DISTINCT sales_order_id) FROM fact_sales_order "
                                     "WHERE sales_order_id >= 100") == [[40, 40]]
    assert run_sql(narrow_warehouse, "SELECT count(*), count(DISTINCT payment_id) FROM fact_payment "
                                     "WHERE payment_id >= 30") == [[30, 30]]
    assert_consistent(s3, buckets, narrow_warehouse)
    after = snapshot()
    assert load.lambda_handler(processed, None)["batches"] == []
    assert snapshot() == after


def test_a_rebuild_in_the_batch_s_transaction_after_its_incremental_update_leaves_the_rollups_equal(
        s3, buckets, narrow_warehouse, monkeypatch):
    """An operator's hook rebuilds the rollups in the batch's own transaction right after the incremental
    update of a batch with two versions of a new id and distinct new payments (the rebuild's state must
    hold the batch's rows once); the next incremental batches, of distinct new ids, then of two versions
    of a new order and of a new payment (their new rows sorted for each id's latest), build on it."""
    run_batch(s3, buckets, T0, base_batch())
    real_update = merge.update_rollups

    def and_rebuild(conn, batch_id, *args, **kwargs):
        updated = real_update(conn, batch_id, *args, **kwargs)
        rollups.rebuild_rollups(conn, batch_id)
        return updated
    monkeypatch.setattr(merge, "update_rollups", and_rebuild)
    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(10, at=later(1), units_sold=5),
                                                      sales_order(10, at=later(1), updated=later(2),
                                                                  units_sold=9)],
                                      "payment": [payment(20, 1, at=later(3))]})
    monkeypatch.setattr(merge, "update_rollups", real_update)
    assert current_units(narrow_warehouse)[10] == 9
    assert_consistent(s3, buckets, narrow_warehouse)

    run_batch(s3, buckets, later(10), {"sales_order": [sales_order(11, at=later(6)),
                                                       sales_order(12, at=later(7))],
                                       "payment": [payment(21, 2, at=later(8))]})
    assert current_units(narrow_warehouse) == {1: 1001, 2: 5000, 10: 9, 11: 1011, 12: 1012}
    assert_consistent(s3, buckets, narrow_warehouse)

    # and then ids that are not distinct: two versions of new order 13 and of new payment 22
    run_batch(s3, buckets, later(15), {"sales_order": [sales_order(13, at=later(11), units_sold=4),
                                                       sales_order(13, at=later(11), updated=later(12),
                                                                   units_sold=40)],
                                       "payment": [payment(22, 1, at=later(11)),
                                                   payment(22, 1, at=later(11), updated=later(12),
                                                           paid=True)]})
    assert current_units(narrow_warehouse)[13] == 40
    assert run_sql(narrow_warehouse, "SELECT paid FROM current_payment WHERE payment_id = 22") == [[True]]
    assert_consistent(s3, buckets, narrow_warehouse)
