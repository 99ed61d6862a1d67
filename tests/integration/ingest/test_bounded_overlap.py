"""The bounded cut counts the overlap window's re-read rows (issue 19): a batch read again below the previous
high (a long transaction held the previous snapshot's xmin back) leaves fewer new rows, so the batch stays
near MAX_BATCH_ROWS, and nothing is lost or landed twice."""
import collections

import boto3
import pytest

import ingest
from tests.support.db import connect, run_sql
from tests.support.ingest import manifest_chain, read_table

pytestmark = pytest.mark.slow


def landed_versions(s3, bucket):
    found = collections.Counter()
    for manifest in manifest_chain(s3, bucket):
        entry = manifest["tables"].get("sales_order")
        if entry:
            table = read_table(s3, bucket, entry["key"])
            found.update(zip(table["sales_order_id"].to_pylist(), table["last_updated"].to_pylist()))
    return found


@pytest.mark.cursor_only("the cursor's overlap window against MAX_BATCH_ROWS; CDC reads no window")
def test_rows_read_again_in_the_overlap_count_against_the_cap(totesys_url, pipeline_env, monkeypatch):
    bucket = pipeline_env(source_url=totesys_url)["ingest"]
    s3 = boto3.client("s3")
    event = {"tables_to_query": ["sales_order"]}
    holder = connect(totesys_url)  # an open writing transaction: every later snapshot's xmin stays below it
    holder.run("BEGIN")
    holder.run("SELECT txid_current()")
    try:
        run_sql(totesys_url, "UPDATE sales_order SET units_sold = units_sold + 1, "
                             "last_updated = localtimestamp - interval '10 minutes' "
                             "WHERE sales_order_id <= 50")
        monkeypatch.setenv("MAX_BATCH_ROWS", "0")
        ingest.lambda_handler(event, None)
        first_high = manifest_chain(s3, bucket)[-1]["tables"]["sales_order"]["high"]
        # 30 later changes, each at its own time just after the first run's high (0.1 s before now)
        run_sql(totesys_url, "SELECT pg_sleep(0.1)")
        run_sql(totesys_url, "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = "
                             "CAST(:h AS timestamp) + (sales_order_id - 100) * interval '1 millisecond' "
                             "WHERE sales_order_id BETWEEN 101 AND 130", h=first_high)
        assert run_sql(totesys_url, "SELECT count(*) FROM sales_order "
                                    "WHERE last_updated >= CAST(:h AS timestamp)", h=first_high) == [[30]]
        monkeypatch.setenv("MAX_BATCH_ROWS", "40")
        files = ingest.lambda_handler(event, None)
        batch = read_table(s3, bucket, files["sales_order"])
        # the 50 re-read rows fill the cap: only the first new time is taken, the rest waits
        assert batch.num_rows == 51
        assert sorted(batch["sales_order_id"].to_pylist())[-1] == 101
        assert manifest_chain(s3, bucket)[-1]["tables"]["sales_order"]["rows"] == 51
    finally:
        holder.run("ROLLBACK")
        holder.close()
    while ingest.lambda_handler(event, None):
        pass
    landed = landed_versions(s3, bucket)
    versions = "SELECT sales_order_id, last_updated FROM sales_order"
    source = {tuple(row) for row in run_sql(totesys_url, versions)}
    assert source <= set(landed)  # nothing lost
    # landed more than once: only rows written while the transaction held the xmin back (the overlap's
    # documented price; the load keeps one fact row per version)
    assert {version for version, count in landed.items() if count > 1} <= {
        version for version in source if version[0] <= 50 or 101 <= version[0] <= 130}
