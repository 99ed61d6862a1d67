"""A lost slot (dropped, invalidated by max_slot_wal_keep_size) is said in one line, re-snapshotted and
reconciled; switching modes either way keeps the warehouse exact. Scale-1 totesys, real PostgreSQL, moto."""
import boto3
import pytest

from tests.support.cdc import assert_warehouse_exact, slot_row
from tests.support.db import connect, run_sql
from tests.support.pipeline import run_pipeline
from utils.aws.state import read_state

pytestmark = pytest.mark.slow

NEW_PAYMENT = ("WITH t AS (INSERT INTO transaction (transaction_type, created_at, last_updated) "
               "VALUES ('SALE', localtimestamp, localtimestamp) RETURNING transaction_id) "
               "INSERT INTO payment (created_at, last_updated, transaction_id, counterparty_id, "
               "payment_amount, currency_id, payment_type_id, paid, payment_date, company_ac_number, "
               "counterparty_ac_number) "
               "SELECT created_at, localtimestamp, t.transaction_id, counterparty_id, 1.23, currency_id, "
               "payment_type_id, false, payment_date, 1, 2 FROM payment, t WHERE payment_id = 1")


def change(source, paid_ids, deleted_id):
    run_sql(source, "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp "
                    "WHERE payment_id = ANY(CAST(:ids AS int[]))", ids=paid_ids)
    run_sql(source, "DELETE FROM payment WHERE payment_id = :i", i=deleted_id)


@pytest.fixture
def loaded(totesys_url, warehouse_url, pipeline_env, cdc_mode):
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()
    return totesys_url, warehouse_url, cdc_mode


def lost_slot_lines(ingest_log):
    return [line for level, line in ingest_log if level == "WARNING" and "CDC slot lost" in line]


def test_a_dropped_then_an_invalidated_slot_is_said_in_one_line_resnapshotted_and_reconciled(
        loaded, ingest_log, pg_admin_url):
    source, warehouse, slot = loaded
    change(source, [1, 2], 20)
    run_pipeline()
    run_sql(source, "SELECT pg_drop_replication_slot(:s)", s=slot)
    change(source, [3], 21)  # in the gap: only a snapshot can see these
    run_sql(source, NEW_PAYMENT)
    run_pipeline()
    assert len(lost_slot_lines(ingest_log)) == 1 and "dropped" in lost_slot_lines(ingest_log)[0]
    assert slot_row(source, slot) is not None
    assert_warehouse_exact(source, warehouse)
    change(source, [4], 22)  # and the new slot carries on
    run_pipeline()
    assert_warehouse_exact(source, warehouse)
    assert len(lost_slot_lines(ingest_log)) == 1

    change(source, [5], 23)
    admin = connect(pg_admin_url)
    try:
        admin.run("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        admin.run("SELECT pg_reload_conf()")
        for _ in range(4):  # move the WAL several segments past the slot, then let a checkpoint cut it
            admin.run("SELECT pg_switch_wal(), txid_current()")
        admin.run("CHECKPOINT")
        assert slot_row(source, slot)[1] == "lost"
    finally:
        admin.run("ALTER SYSTEM RESET max_slot_wal_keep_size")
        admin.run("SELECT pg_reload_conf()")
        admin.close()
    run_pipeline()
    assert len(lost_slot_lines(ingest_log)) == 2 and "invalidated" in lost_slot_lines(ingest_log)[1]
    assert slot_row(source, slot)[1] != "lost"
    assert_warehouse_exact(source, warehouse)


def test_switching_cursor_to_cdc_to_cursor_keeps_the_warehouse_exact(
        totesys_url, warehouse_url, pipeline_env, monkeypatch, buckets):
    source, warehouse = totesys_url, warehouse_url
    pipeline_env(source_url=source, warehouse_url=warehouse)
    run_pipeline()  # cursor
    change(source, [1], 30)
    monkeypatch.setenv("INGEST_MODE", "cdc")
    monkeypatch.setenv("CDC_SLOT_NAME", f"t_cdc_switch_{source.rsplit('/', 1)[1]}")
    run_pipeline()  # the snapshot: the cursor's key sets see the delete
    assert_warehouse_exact(source, warehouse)
    change(source, [2], 31)
    run_sql(source, NEW_PAYMENT)
    run_pipeline()  # cdc
    assert_warehouse_exact(source, warehouse)
    run_sql(source, "DELETE FROM payment WHERE payment_id = (SELECT max(payment_id) FROM payment)")
    change(source, [3], 32)
    monkeypatch.setenv("INGEST_MODE", "cursor")
    result = run_pipeline()  # cursor again, from the key sets and bounds CDC kept
    assert result["deleted"] == {"payment": 2}
    assert_warehouse_exact(source, warehouse)
    state, _ = read_state(boto3.client("s3"), buckets["ingest"], "ingest")
    assert "cdc" not in state
