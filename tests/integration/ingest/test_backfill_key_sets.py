"""A backfill's intermediate rounds read no key sets (utils.ingest.run._key_sets_due, issue 24): what the
rounds that skip them land must still be found deleted later, held deletions stay held (and alerted) until
approved, a state written before ``keys_read``, an approval and a re-sync read them, and a round killed
before its state advanced is retried exactly. One scale-1 backfill at a tiny cap, changed between its rounds
the way an unlucky source or an operator would (docs/RELIABILITY.md defects 18 and 19)."""
import json

import boto3
import pytest

import ingest
import load
import transform
import utils.ingest.run as ingest_run
from tests.integration.ingest.test_bounded_batches import FACTS, versions
from tests.support.db import run_sql as query

CAP = 6_000
ORDER = ("INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, "
         "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
         "agreed_delivery_location_id) SELECT created_at, CAST(:cut AS timestamp), design_id, staff_id, "
         "counterparty_id, 5, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
         "agreed_delivery_location_id FROM sales_order ORDER BY sales_order_id LIMIT 1 "
         "RETURNING sales_order_id")
DESIGN = ("INSERT INTO design (design_name, file_location, file_name, last_updated) "
          "VALUES (:name, '/x', 'x.json', localtimestamp) RETURNING design_id")


@pytest.mark.cursor_only("a CDC snapshot's batches read the key sets every round; CDC's own carry them")
def test_a_backfill_that_skips_key_sets_records_every_deletion_once_and_holds_mass_ones_until_approved(
        totesys_url, warehouse_url, pipeline_env, monkeypatch, caplog):
    buckets = pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    monkeypatch.setenv("MAX_BATCH_ROWS", str(CAP))
    monkeypatch.setenv("MAX_DELETE_FRACTION", "0.001")  # one design of ~470 is a mass deletion, one order not
    s3 = boto3.client("s3")

    def state():
        return json.loads(s3.get_object(Bucket=buckets["ingest"], Key="_state/ingest.json")["Body"].read())

    def held_alerts():
        return sum(r.getMessage().startswith("deletions held") for r in caplog.records)

    ids, held = {}, {}
    paid = query(totesys_url, "SELECT payment_id, last_updated FROM payment "
                              "ORDER BY last_updated, payment_id LIMIT 1")[0]

    def between(rounds, read):
        if rounds == 1:
            # A design inserted as usual (stamped now: the dimension tables are not cut, so the next round
            # lands it), another to be updated, and an order stamped at the cut (a backdated insert the
            # next round's window takes): all new since round 1's key sets. A payment round 1 landed is
            # deleted and inserted again under its id, stamped now.
            ids["design"] = query(totesys_url, DESIGN, name="short-lived")[0][0]
            ids["updated"] = query(totesys_url, DESIGN, name="to update")[0][0]
            ids["order"] = query(totesys_url, ORDER, cut=state()["tables"]["sales_order"]["high"])[0][0]
            designs = query(totesys_url, "SELECT count(*) FROM design")[0][0]
            held["design"] = {"rows": 1, "table_rows": designs}
            query(totesys_url, "WITH gone AS (DELETE FROM payment WHERE payment_id = :id RETURNING *) "
                               "INSERT INTO payment SELECT * FROM gone", id=paid[0])
            query(totesys_url, "UPDATE payment SET last_updated = localtimestamp WHERE payment_id = :id",
                  id=paid[0])
        elif rounds == 2:
            assert not read, "round 2 was to read no key sets"
            # Landed by the round that read no key sets; now deleted from the source, or updated.
            assert query(warehouse_url, "SELECT count(*) FROM dim_design WHERE design_id = ANY(:ids)",
                         ids=[ids["design"], ids["updated"]]) == [[2]]
            assert query(warehouse_url, "SELECT count(*) FROM fact_sales_order WHERE sales_order_id = :id",
                         id=ids["order"]) == [[1]]
            query(totesys_url, "DELETE FROM design WHERE design_id = :id", id=ids["design"])
            query(totesys_url, "DELETE FROM sales_order WHERE sales_order_id = :id", id=ids["order"])
            query(totesys_url, "UPDATE design SET design_name = 'updated', last_updated = localtimestamp "
                               "WHERE design_id = :id", id=ids["updated"])
        elif rounds == 3:
            assert not read
            # The state as the code before keys_read wrote it: the next round reads the key sets.
            written = state()
            del written["keys_read"]
            s3.put_object(Bucket=buckets["ingest"], Key="_state/ingest.json",
                          Body=json.dumps(written).encode())
        elif rounds == 4:
            assert read
            assert state()["held_deletes"] == held
            assert query(warehouse_url, "SELECT source_table, source_id FROM etl_deleted_rows") == \
                [["sales_order", ids["order"]]]
            ids["alerts"] = held_alerts()
        elif rounds == 5:
            assert not read and held_alerts() == ids["alerts"] + 1, "a round that skips the keys alerts too"
            assert state()["held_deletes"] == held

    def crash(*args, **kwargs):
        raise RuntimeError("killed before the state pointer advanced")

    rounds, reads = 0, []
    while True:
        rounds += 1
        assert rounds < 50, "never caught up"
        before = state().get("keys_read") if rounds > 1 else None
        keys_before = state()["tables"]["design"]["keys"] if rounds > 1 else None
        event = {6: {"approve_deletes": ["design"]}, 7: {"resync": ["design"]}}.get(rounds, {})
        if rounds == 2:
            # Killed once after landing its rows and the grown key sets, before its state advanced: they
            # are orphans, and the retry lands and adds the same again.
            with monkeypatch.context() as patched, pytest.raises(RuntimeError):
                patched.setattr(ingest_run, "write_ingest_state", crash)
                ingest.lambda_handler({}, None)
            assert state()["tables"]["design"]["keys"] == keys_before
            assert s3.list_objects_v2(Bucket=buckets["ingest"], Prefix="_keys/design/")["KeyCount"] == 2
        transformed = transform.lambda_handler(ingest.lambda_handler(event, None), None)
        reads.append(state()["keys_read"] != before)
        assert load.lambda_handler(transformed, None)["rejected_rows"] == 0
        if not transformed.get("more_waiting"):
            break
        between(rounds, reads[-1])
    assert rounds > 7 and reads[:7] == [True, False, False, True, False, True, True] and reads[-1], reads
    assert state()["held_deletes"] == {}
    assert sorted(query(warehouse_url, "SELECT source_table, source_id, reinserted_batch_id "
                                       "FROM etl_deleted_rows")) == \
        [["design", ids["design"], None], ["sales_order", ids["order"], None]]
    assert query(warehouse_url, "SELECT dimension_id FROM deleted_dimension_rows") == [[ids["design"]]]
    assert query(warehouse_url, "SELECT design_name FROM dim_design WHERE design_id = :id",
                 id=ids["updated"]) == [["updated"]]
    # Every source version one fact row; the deleted order's and the re-inserted payment's first kept.
    stamp = query(warehouse_url, "SELECT last_updated_date + last_updated_time FROM fact_sales_order "
                                 "WHERE sales_order_id = :id", id=ids["order"])[0][0]
    known = {"sales_order": {(ids["order"], stamp)}, "payment": {tuple(paid)}}
    for table, fact in FACTS.items():
        known.setdefault(table, set()).update(
            versions(totesys_url, f"SELECT {table}_id, last_updated FROM {table}"))  # nosec B608
        assert versions(warehouse_url, f"SELECT {table}_id, last_updated_date + last_updated_time "
                                       f"FROM {fact}") == sorted(known[table]), fact  # nosec B608
    assert query(warehouse_url, "SELECT count(*) FROM current_sales_order WHERE sales_order_id = :id",
                 id=ids["order"]) == [[0]]
    assert query(warehouse_url, "SELECT count(*) FROM etl_rejected_rows") == [[0]]
