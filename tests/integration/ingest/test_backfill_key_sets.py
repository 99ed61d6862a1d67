"""A backfill's intermediate rounds read no key sets (utils.ingest.run._key_sets_due, issue 24): what the
rounds that skip them land must still be found deleted later. One scale-1 backfill at a tiny cap, changed
between its rounds the way an unlucky source would (docs/RELIABILITY.md defect 18)."""
import json

import boto3

import ingest
import load
import transform
from tests.integration.ingest.test_bounded_batches import FACTS, versions
from tests.support.db import run_sql as query

CAP = 6_000


def test_rows_landed_by_a_round_that_read_no_key_sets_then_deleted_are_recorded_deleted(
        totesys_url, warehouse_url, pipeline_env, monkeypatch):
    buckets = pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    monkeypatch.setenv("MAX_BATCH_ROWS", str(CAP))
    s3 = boto3.client("s3")

    def state():
        return json.loads(s3.get_object(Bucket=buckets["ingest"], Key="_state/ingest.json")["Body"].read())

    inserted = {}

    def between(rounds, read):
        if rounds == 1:
            # A design inserted as usual (stamped now: the dimension tables are not cut, so the next
            # round lands it), and an order stamped at the cut (a backdated insert the next round's
            # window takes): both new since the key sets of round 1.
            inserted["design"] = query(totesys_url, (
                "INSERT INTO design (design_name, file_location, file_name, last_updated) "
                "VALUES ('short-lived', '/x', 'x.json', localtimestamp) RETURNING design_id"))[0][0]
            cut = state()["tables"]["sales_order"]["high"]
            inserted["sales_order"] = query(totesys_url, (
                "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, "
                "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                "agreed_delivery_location_id) SELECT created_at, CAST(:cut AS timestamp), design_id, "
                "staff_id, counterparty_id, 5, unit_price, currency_id, agreed_delivery_date, "
                "agreed_payment_date, agreed_delivery_location_id FROM sales_order ORDER BY sales_order_id "
                "LIMIT 1 RETURNING sales_order_id"), cut=cut)[0][0]
        if rounds == 2:
            assert not read, "round 2 was to read no key sets"
            # Both landed by the round that read no key sets; now deleted from the source.
            assert query(warehouse_url, "SELECT count(*) FROM dim_design WHERE design_id = :id",
                         id=inserted["design"]) == [[1]]
            assert query(warehouse_url, "SELECT count(*) FROM fact_sales_order WHERE sales_order_id = :id",
                         id=inserted["sales_order"]) == [[1]]
            query(totesys_url, "DELETE FROM design WHERE design_id = :id", id=inserted["design"])
            query(totesys_url, "DELETE FROM sales_order WHERE sales_order_id = :id",
                  id=inserted["sales_order"])

    rounds, reads = 0, []
    while True:
        rounds += 1
        assert rounds < 50, "never caught up"
        before = state().get("keys_read") if rounds > 1 else None
        transformed = transform.lambda_handler(ingest.lambda_handler({}, None), None)
        reads.append(state()["keys_read"] != before)
        assert load.lambda_handler(transformed, None)["rejected_rows"] == 0
        if not transformed.get("more_waiting"):
            break
        between(rounds, reads[-1])
    assert rounds >= 3 and reads[-1], reads
    assert sorted(query(warehouse_url, "SELECT source_table, source_id, reinserted_batch_id "
                                       "FROM etl_deleted_rows")) == \
        [["design", inserted["design"], None], ["sales_order", inserted["sales_order"], None]]
    stamp = query(warehouse_url, "SELECT last_updated_date + last_updated_time FROM fact_sales_order "
                                 "WHERE sales_order_id = :id", id=inserted["sales_order"])[0][0]
    known = {"sales_order": {(inserted["sales_order"], stamp)}}
    assert query(warehouse_url, "SELECT dimension_id FROM deleted_dimension_rows") == [[inserted["design"]]]
    for table, fact in FACTS.items():  # every version landed once; the deleted order's too (history)
        known.setdefault(table, set()).update(
            versions(totesys_url, f"SELECT {table}_id, last_updated FROM {table}"))  # nosec B608
        assert versions(warehouse_url, f"SELECT {table}_id, last_updated_date + last_updated_time "
                                       f"FROM {fact}") == sorted(known[table]), fact  # nosec B608
    assert query(warehouse_url, "SELECT count(*) FROM current_sales_order WHERE sales_order_id = :id",
                 id=inserted["sales_order"]) == [[0]]
    assert query(warehouse_url, "SELECT count(*) FROM etl_rejected_rows") == [[0]]
