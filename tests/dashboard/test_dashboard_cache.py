"""The dashboard's cache (issue 25): figures served from memory while the warehouse's data version (last
batch id, rollups' revision) stays the same, recomputed as soon as a batch is loaded or the rollups are
rebuilt."""
import pytest

from tests.support.dashboard_page import parse_page
from tests.support.db import connect, run_sql
from totesys_local.dashboard.app import render_page
from totesys_local.dashboard.cache import PageCache
from totesys_local.dashboard.server import PageWarmer
from utils.db.connection import close_db_connection
from utils.load.rollups import rebuild_rollups


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, value):
        def compute():
            self.calls += 1
            return value
        return compute


def test_a_result_is_computed_once_per_version_and_key():
    cache, count = PageCache(), Counter()
    assert cache.get("u", ("b1", 1), "totals", count(1)) == 1
    assert cache.get("u", ("b1", 1), "totals", count(2)) == 1
    assert cache.get("u", ("b1", 1), "by_month", count(3)) == 3
    assert (count.calls, cache.hits, cache.misses) == (2, 1, 2)


def test_a_new_version_recomputes_and_drops_the_old_versions_entries():
    cache, count = PageCache(), Counter()
    cache.get("u", ("b1", 1), "totals", count("old"))
    cache.get("other", ("b1", 1), "totals", count("other"))
    assert cache.get("u", ("b2", 2), "totals", count("new")) == "new"
    assert [key for key in cache._entries if key[0] == "u"] == [("u", ("b2", 2), "totals")]
    assert cache.get("other", ("b1", 1), "totals", count("never")) == "other"  # other warehouses keep theirs
    assert cache.get("u", ("b1", 1), "totals", count("again")) == "again"     # an older snapshot: computed


def test_the_least_recently_used_entry_goes_first():
    cache, count = PageCache(max_entries=2), Counter()
    for key in ("a", "b"):
        cache.get("u", 1, key, count(key))
    cache.get("u", 1, "a", count("a"))
    cache.get("u", 1, "c", count("c"))
    assert sorted(key[2] for key in cache._entries) == ["a", "c"]


def shown_orders(url, cache):
    page = render_page(url, {}, cache)
    assert page.status == 200
    return {label: value for label, value in parse_page(page.html).metrics().items()
            if label.startswith("Orders")}


@pytest.mark.slow
def test_the_page_is_served_from_the_cache_until_a_batch_is_loaded_or_the_rollups_rebuilt(
        new_database, warehouse_template):
    url, cache = new_database(template=warehouse_template), PageCache()
    first = shown_orders(url, cache)
    assert cache.misses > 0 and cache.hits == 0
    # Changed behind the dashboard's back (no new batch, same revision): the page keeps its figures.
    run_sql(url, "UPDATE rollup_sales_daily SET orders = orders + 1000 WHERE currency_id = 1")
    misses = cache.misses
    assert shown_orders(url, cache) == first
    assert cache.misses == misses and cache.hits > 0

    run_sql(url, "INSERT INTO etl_load_ledger (batch_id, manifest_key, row_counts) "
                 "VALUES ('29991231T235959000000', 'k', '{}')")
    changed = shown_orders(url, cache)
    gbp = run_sql(url, "SELECT currency_code FROM dim_currency WHERE currency_id = 1")[0][0]
    assert int(changed[f"Orders {gbp}"].replace(",", "")) == int(first[f"Orders {gbp}"].replace(",", "")) \
        + 1000 * run_sql(url, "SELECT count(*) FROM rollup_sales_daily WHERE currency_id = 1")[0][0]

    conn = connect(url)
    try:
        conn.run("START TRANSACTION")
        rebuild_rollups(conn)
        conn.run("COMMIT")
    finally:
        close_db_connection(conn)
    assert shown_orders(url, cache) == first


@pytest.mark.slow
def test_the_warmer_computes_the_page_once_per_data_version_and_pages_then_come_from_memory(
        new_database, warehouse_template):
    url, cache = new_database(template=warehouse_template), PageCache()
    warmer = PageWarmer(url, cache, interval=3600)
    warmer.start()  # renders now, in its thread; a request waits for that render
    warmer.wait()
    assert warmer.renders == 1 and cache.misses > 0
    misses = cache.misses
    first = shown_orders(url, cache)
    assert cache.misses == misses  # the visitor's page: every figure from memory
    assert warmer.warm_once() is False and warmer.renders == 1  # same data version: nothing computed

    run_sql(url, "INSERT INTO etl_load_ledger (batch_id, manifest_key, row_counts) "
                 "VALUES ('29991231T235959000000', 'k', '{}')")
    assert warmer.warm_once() is True and cache.misses > misses
    misses = cache.misses
    assert shown_orders(url, cache) == first and cache.misses == misses
    warmer.stop()


def test_the_warmer_renders_a_page_that_cannot_be_read_every_time_and_never_raises():
    cache = PageCache()
    warmer = PageWarmer("postgresql://u:p@127.0.0.1:1/w", cache, interval=3600)
    assert warmer.warm_once() is True and warmer.warm_once() is True
    assert warmer.renders == 2
