"""One plan per backfill (utils/ingest/bounded.py, issue 24): the round that finds more rows waiting than
MAX_BATCH_ROWS plans every later cut from one bucketed count; later rounds take their cut from the state
pointer after one count, plan again when rows written since push a planned batch over the cap, and land
every version exactly once."""
import collections
import json
from datetime import datetime

import boto3
import pytest

import ingest
from tests.support.db import run_sql as query
from tests.support.ingest import manifest_chain, read_table
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.ingest.bounded import BOUNDED_TABLES, plan_cuts

CAP = 7_000
EARLIEST = datetime(1970, 1, 1)
WINDOW = ("SELECT count(*) FROM (SELECT last_updated FROM sales_order UNION ALL SELECT last_updated FROM "
          "purchase_order UNION ALL SELECT last_updated FROM transaction UNION ALL SELECT last_updated FROM "
          "payment) w WHERE last_updated >= :low AND last_updated < :high")


@pytest.fixture
def source(totesys_url):
    conn = connect_to_db(credentials_from_url(totesys_url))
    yield conn
    close_db_connection(conn)


def batch_sizes(conn, cuts, upper):
    """Rows of the bounded tables between consecutive cuts (the first from the beginning, the last to
    ``upper``)."""
    bounds = [EARLIEST, *cuts, upper]
    return [conn.run(WINDOW, low=low, high=high)[0][0] for low, high in zip(bounds, bounds[1:])]


def test_the_plan_cuts_every_batch_within_the_cap_and_nearly_full(source):
    upper = source.run("SELECT localtimestamp")[0][0]
    total = source.run(WINDOW, low=EARLIEST, high=upper)[0][0]
    planned = plan_cuts(source, list(BOUNDED_TABLES), {}, upper, CAP)
    cuts = [planned.cut, *planned.planned]
    assert cuts == sorted(set(cuts))
    sizes = batch_sizes(source, cuts, upper)
    assert sum(sizes) == total
    assert max(sizes) <= CAP
    # whole buckets of about a 64th of the cap: every planned batch but the last nearly full
    assert min(sizes[:-1]) >= CAP * 0.9
    assert len(cuts) == -(-total // CAP) - 1 or len(cuts) == -(-total // CAP)


def test_a_planned_cut_is_taken_after_one_count_and_replanned_when_rows_moved_into_it(source):
    upper = source.run("SELECT localtimestamp")[0][0]
    planned = plan_cuts(source, list(BOUNDED_TABLES), {}, upper, CAP)
    first, second = planned.cut, planned.planned[0]
    # the small tables' previous high is the previous run's clock: no bound of the plan
    lower = {**dict.fromkeys(BOUNDED_TABLES, first), "address": upper}
    # the next round: the planned cut, the rest of the plan kept
    taken = plan_cuts(source, [*BOUNDED_TABLES, "address"], lower, upper, CAP, planned=planned.planned)
    assert (taken.cut, taken.planned) == (second, planned.planned[1:])
    # a cut at or below the previous high is skipped
    assert plan_cuts(source, list(BOUNDED_TABLES), dict.fromkeys(BOUNDED_TABLES, second), upper, CAP,
                     planned=planned.planned).cut != second
    # rows written since the plan (backdated into the planned batch) push it over the cap: planned again
    source.run("UPDATE payment SET last_updated = CAST(:second AS timestamp) - interval '1 second' "
               "WHERE payment_id IN (SELECT payment_id FROM payment WHERE last_updated >= :second "
               "ORDER BY payment_id LIMIT :n)", second=second, n=CAP // 2)
    assert source.row_count == CAP // 2
    again = plan_cuts(source, list(BOUNDED_TABLES), lower, upper, CAP, planned=planned.planned)
    assert again.cut < second
    assert source.run(WINDOW, low=first, high=again.cut)[0][0] <= CAP


def test_a_cap_the_rows_fit_in_plans_nothing(source):
    upper = source.run("SELECT localtimestamp")[0][0]
    assert plan_cuts(source, list(BOUNDED_TABLES), {}, upper, 10 ** 9).cut is None
    assert plan_cuts(source, list(BOUNDED_TABLES), {}, upper, 0).cut is None
    assert plan_cuts(source, ["address"], {}, upper, 1).cut is None


@pytest.mark.slow  # about 10 s: a scale-1 ingest in a dozen rounds
def test_rounds_follow_the_plan_and_land_rows_changed_between_rounds_exactly_once(
        totesys_url, pipeline_env, monkeypatch, ingest_log):
    bucket = pipeline_env(source_url=totesys_url)["ingest"]
    monkeypatch.setenv("MAX_BATCH_ROWS", str(CAP))
    s3 = boto3.client("s3")
    ingest.lambda_handler({}, None)
    state = json.loads(s3.get_object(Bucket=bucket, Key="_state/ingest.json")["Body"].read())
    assert state["more_waiting"] and len(state["planned_cuts"]) >= 3
    # between rounds: an old order updated now, and one moved back into a batch the plan has yet to take
    query(totesys_url, "UPDATE sales_order SET units_sold = 1, last_updated = localtimestamp "
                       "WHERE sales_order_id = 3")
    query(totesys_url, "UPDATE sales_order SET units_sold = 2, last_updated = CAST(:at AS timestamp) "
                       "WHERE sales_order_id = (SELECT max(sales_order_id) FROM sales_order)",
          at=state["planned_cuts"][1])
    rounds, planned = 1, state["planned_cuts"]
    while state["more_waiting"]:
        ingest_log.clear()
        ingest.lambda_handler({}, None)
        rounds += 1
        assert rounds < 40, "never caught up"
        state = json.loads(s3.get_object(Bucket=bucket, Key="_state/ingest.json")["Body"].read())
        if rounds == 2:  # the next planned cut, after one count; the rest of the plan kept
            assert any("batch cut as planned" in line for _, line in ingest_log)
            assert state["planned_cuts"] == planned[1:]
    assert "planned_cuts" not in state
    # the row moved back into a planned batch pushed no batch over the cap, and no round planned afresh
    # more than the plan's length
    assert rounds <= len(planned) + 2
    landed = collections.Counter()
    for manifest in manifest_chain(s3, bucket):
        assert sum(manifest["tables"].get(table, {}).get("rows", 0) for table in BOUNDED_TABLES) <= CAP
        entry = manifest["tables"].get("sales_order")
        if entry:
            table = read_table(s3, bucket, entry["key"])
            landed.update(zip(table["sales_order_id"].to_pylist(), table["last_updated"].to_pylist()))
    source_versions = {tuple(row) for row in query(totesys_url,
                                                   "SELECT sales_order_id, last_updated FROM sales_order")}
    assert source_versions <= set(landed)
    assert set(landed.values()) == {1}  # every version landed once, none twice
