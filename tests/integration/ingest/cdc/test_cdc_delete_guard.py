"""The mass-delete guard in INGEST_MODE=cdc (utils.ingest.delete_guard, as in cursor mode): a TRUNCATE the
slot reports, followed in the same batch by inserts, holds the deletions; nothing leaves the current views and
every later run decides them again (and alerts) until `totesys deletes --approve` (the event
{"approve_deletes": [...]}) records them, in a slot batch: no re-snapshot. Scale-1 totesys, real PostgreSQL
(wal_level = logical), moto."""
import boto3
import pytest

import ingest
import load
import transform
from tests.support.cdc import assert_warehouse_exact
from tests.support.db import run_sql
from tests.support.pipeline import run_pipeline
from utils.aws.state import read_state

pytestmark = pytest.mark.slow

INSERT_PAYMENT = (
    "INSERT INTO payment (payment_id, created_at, last_updated, transaction_id, counterparty_id, "
    "payment_amount, currency_id, payment_type_id, paid, payment_date, company_ac_number, "
    "counterparty_ac_number) VALUES (:id, localtimestamp, localtimestamp, :tx, 1, :amount, 1, 1, false, "
    "'2024-01-02', 1, 2)")


def held(buckets):
    return read_state(boto3.client("s3"), buckets["ingest"], "ingest")[0].get("held_deletes")


def current_payments(warehouse):
    return {row[0]: row[1] for row in run_sql(
        warehouse, "SELECT payment_id, payment_amount::text FROM current_payment")}


def test_a_truncate_then_inserts_in_one_cdc_batch_are_held_until_approved(
        totesys_url, warehouse_url, pipeline_env, cdc_mode, ingest_log):
    buckets = pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()  # the snapshot
    before = current_payments(warehouse_url)
    count = len(before)
    top = max(before)
    # One batch: the table emptied, payment 1 inserted again (a new version), a new payment, another change.
    run_sql(totesys_url, "TRUNCATE payment")
    run_sql(totesys_url, INSERT_PAYMENT, id=1, tx=1, amount=999)
    run_sql(totesys_url, INSERT_PAYMENT, id=top + 1, tx=2, amount=55)
    run_sql(totesys_url, "UPDATE sales_order SET units_sold = 42, last_updated = localtimestamp "
                         "WHERE sales_order_id = 1")

    result = run_pipeline()

    assert run_sql(warehouse_url, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 1") \
        == [[42]]
    now = current_payments(warehouse_url)
    assert set(now) == set(before) | {top + 1}  # nothing disappeared; the new payment came
    assert now[1] == "999.00" and now[top + 1] == "55.00"
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_deleted_rows") == [[0]]
    assert "deleted_rows" not in result
    assert held(buckets) == {"payment": {"rows": count - 1, "table_rows": count}}

    # A later run (nothing new) holds them again, and says so again.
    errors = len([line for level, line in ingest_log if level == "ERROR" and "deletions held" in line])
    run_pipeline()
    assert current_payments(warehouse_url) == now
    # As in cursor mode: the stored key set is the current keys plus the held ones.
    assert held(buckets) == {"payment": {"rows": count - 1, "table_rows": count + 1}}
    assert len([line for level, line in ingest_log if level == "ERROR" and "deletions held" in line]) \
        == errors + 1

    approved = run_pipeline({"approve_deletes": ["payment"]})

    assert approved["deleted"] == {"payment": count - 1}
    assert current_payments(warehouse_url) == {1: "999.00", top + 1: "55.00"}
    assert held(buckets) == {}
    assert_warehouse_exact(totesys_url, warehouse_url)
    # Approved once: the slot goes on.
    run_sql(totesys_url, INSERT_PAYMENT, id=top + 2, tx=3, amount=7)
    assert "deleted" not in run_pipeline()
    assert held(buckets) == {}
    assert_warehouse_exact(totesys_url, warehouse_url)


def test_held_deletions_approved_during_a_backlog_are_decided_at_its_end_after_every_change_before_them(
        totesys_url, warehouse_url, pipeline_env, cdc_mode, monkeypatch):
    """A hold approved while the slot's backlog lands in bounded batches: a bounded batch stops before the
    source's present, so it decides only its own deletions (an id the source lacks may be a deletion still
    to come, whose row changes later in the backlog); the whole batch at the end records the held ids with
    the backlog's own deletion. Payment 9002 is updated in the second batch and deleted in the fourth:
    recorded in the first, it would come back with the second."""
    buckets = pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()  # the snapshot
    run_sql(totesys_url, "DELETE FROM payment WHERE payment_id <= 6000")
    run_pipeline()
    assert held(buckets)["payment"]["rows"] == 6000
    for number in range(9):  # 9 transactions of 5 payment updates (7 lines each): 3 per bounded batch
        first = 9000 if number == 3 else 9100 + number * 5  # the fourth: 9000-9004, in the second batch
        run_sql(totesys_url, "UPDATE payment SET payment_amount = 3.33, last_updated = localtimestamp "
                             "WHERE payment_id BETWEEN :a AND :b", a=first, b=first + 4)
    run_sql(totesys_url, "DELETE FROM payment WHERE payment_id = 9002")  # in the fourth batch, whole
    monkeypatch.setenv("MAX_BATCH_ROWS", "20")
    rounds = 0
    while True:  # the state machine repeats the execution's input in every round
        rounds += 1
        files = ingest.lambda_handler({"approve_deletes": ["payment"]}, None)
        transformed = transform.lambda_handler(files, None)
        load.lambda_handler(transformed, None)
        if rounds == 1:
            assert held(buckets)["payment"]["rows"] == 6000  # carried by the bounded batch, not decided
        if not transformed.get("more_waiting"):
            break
        assert rounds < 10
    assert rounds >= 4 and held(buckets) == {}
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_deleted_rows WHERE source_table = 'payment'") \
        == [[6001]]
    assert_warehouse_exact(totesys_url, warehouse_url)
    # Its last version stays in the history, loaded before its deletion was recorded.
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_payment WHERE payment_id = 9002 "
                                  "AND payment_amount = 3.33") == [[1]]
