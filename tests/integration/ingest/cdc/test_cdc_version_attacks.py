"""Adversarial: value-aware fact versions (docs/DESIGN.md, "A version is its stamp and its values") meet
the two readers of CDC mode. A row the slot brought (decoded from test_decoding's text) and the same row
re-read by a snapshot after a lost slot (COPY) must compare equal in every column the fact keeps, or the
re-read appends it a second time. The small known source, real PostgreSQL, moto."""
import pytest

from tests.support.cdc import assert_warehouse_exact
from tests.support.db import run_sql
from tests.support.pipeline import run_pipeline

pytestmark = pytest.mark.slow

# Values at the edges of each decoder: quotes, a backslash, a tab, a newline, non-ASCII and a trailing
# space in text; a stamp whose milliseconds end in zeros and one with none; numerics with a trailing zero,
# at the column's limit and negative; a far-past creation time; true.
TRICKY = [
    "UPDATE purchase_order SET item_code = E'O''Brien \"q\" \\\\ tab\\t nl\\n \u00e9\u20ac\U0001F600 ', "
    "item_unit_price = 0.10, item_quantity = 0, created_at = '1999-12-31 23:59:59.999', "
    "last_updated = '2024-06-01 10:00:00.100' WHERE purchase_order_id = 1",
    "UPDATE sales_order SET unit_price = 99999999.99, units_sold = -1, "
    "last_updated = '2024-06-01 10:00:00.010' WHERE sales_order_id = 1",
    "UPDATE sales_order SET unit_price = 0.00, last_updated = '2024-06-01 10:00:00' WHERE sales_order_id = 2",
    "UPDATE payment SET payment_amount = -0.01, paid = true, last_updated = '2024-06-01 10:00:00.001' "
    "WHERE payment_id = 1",
]
FACTS = {"fact_sales_order": "sales_order_id", "fact_purchase_order": "purchase_order_id",
         "fact_payment": "payment_id"}


def fact_rows(url):
    return {fact: sorted(tuple(row) for row in run_sql(
        url, f"SELECT {key}, last_updated_date, last_updated_time, etl_load_order "  # nosec B608 - test SQL
             f"FROM {fact}")) for fact, key in FACTS.items()}


def test_rows_the_slot_brought_are_not_appended_again_by_the_snapshot_after_a_lost_slot(
        pipeline_env, source_url, warehouse_url, cdc_mode, check):
    buckets = pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    run_pipeline()
    for statement in TRICKY:
        run_sql(source_url, statement)
    run_pipeline()  # the slot brings the updates
    assert run_sql(warehouse_url, "SELECT item_code FROM current_purchase_order") == [
        ["O'Brien \"q\" \\ tab\t nl\n \u00e9\u20ac\U0001F600 "]]
    before = fact_rows(warehouse_url)

    run_sql(source_url, "SELECT pg_drop_replication_slot(:s)", s=cdc_mode)
    run_pipeline()  # a snapshot re-reads every row
    assert fact_rows(warehouse_url) == before
    run_pipeline({"resync": ["sales_order", "purchase_order", "payment"]})  # and a re-sync, once more
    assert fact_rows(warehouse_url) == before
    assert_warehouse_exact(source_url, warehouse_url)
    assert check(source_url, warehouse_url, buckets["ingest"]).exit_code == 0


def test_values_set_back_under_one_stamp_across_bounded_cdc_batches_re_mark_the_held_version(
        pipeline_env, source_url, warehouse_url, cdc_mode, check, monkeypatch):
    """A -> B -> A under one stamp in two transactions, cut into two batches (MAX_BATCH_ROWS=1: each
    transaction a batch of its own): the first appends B, the second re-marks the held A as current,
    appending nothing; a snapshot after a lost slot adds nothing either."""
    buckets = pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    run_pipeline()
    original = run_sql(source_url, "SELECT units_sold FROM sales_order WHERE sales_order_id = 2")[0][0]
    run_sql(source_url, "UPDATE sales_order SET units_sold = 4242 WHERE sales_order_id = 2")
    run_sql(source_url, "UPDATE sales_order SET units_sold = :u WHERE sales_order_id = 2", u=original)
    monkeypatch.setenv("MAX_BATCH_ROWS", "1")
    run_pipeline()  # the first transaction only: B appended, current
    assert run_sql(warehouse_url, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 2") \
        == [[4242]]
    run_pipeline()

    versions = run_sql(warehouse_url, "SELECT units_sold, etl_load_order FROM fact_sales_order "
                                      "WHERE sales_order_id = 2 ORDER BY sales_record_id")
    assert [units for units, _ in versions] == [original, 4242]
    assert versions[0][1] > versions[1][1]  # the held version re-marked after the one appended
    assert run_sql(warehouse_url, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 2") \
        == [[original]]
    assert check(source_url, warehouse_url, buckets["ingest"]).exit_code == 0
    run_sql(source_url, "SELECT pg_drop_replication_slot(:s)", s=cdc_mode)
    monkeypatch.delenv("MAX_BATCH_ROWS")
    run_pipeline()
    assert run_sql(warehouse_url, "SELECT units_sold, etl_load_order FROM fact_sales_order "
                                  "WHERE sales_order_id = 2 ORDER BY sales_record_id") == versions
