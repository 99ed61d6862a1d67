"""INGEST_MODE=cdc in batches of at most MAX_BATCH_ROWS (utils.ingest.cdc.run.batch_end): a first snapshot
larger than the bound lands as the cursor's bounded first load does, a backlog of changes larger than the
bound lands in several batches of whole transactions, each confirmed on the slot only once landed, with
``more_waiting`` for the state machine; a kill between landing and confirming, and one before the state
pointer, reconcile. Scale-1 totesys, real PostgreSQL (wal_level = logical), moto."""
import boto3
import pytest

import ingest
import load
import transform
from tests.support.cdc import assert_warehouse_exact, slot_row
from tests.support.db import run_sql
from tests.support.ingest import landed_versions, read_table
from utils.aws.objects import read_json
from utils.aws.state import read_state
from utils.db.connection import close_db_connection, connect_to_db
from utils.db.connection import credentials_from_url
from utils.ingest.cdc import run as cdc_run
from utils.ingest.cdc.run import batch_end

pytestmark = pytest.mark.slow

# 12 transactions of 5 payment updates each: 7 lines (BEGIN, 5 changes, COMMIT) per transaction.
TRANSACTIONS, PER_TRANSACTION = 12, 5
BOUND = 20  # lines: a batch takes 3 transactions (14 lines < 20 <= 21), never 2 and a half


def one_round(event=None):
    """Ingest -> transform -> load once; returns (ingest files, transform result)."""
    files = ingest.lambda_handler(event or {}, None)
    transformed = transform.lambda_handler(files, None)
    load.lambda_handler(transformed, None)
    return files, transformed


def ingest_state():
    return read_state(boto3.client("s3"), _bucket(), "ingest")[0]


def _bucket():
    import os
    return os.environ["INGEST_BUCKET"]


def test_batch_end_cuts_at_the_last_commit_of_a_peek_that_reached_the_bound():
    delete = "table public.payment: DELETE: payment_id[integer]:"
    lines = [("0/1", "BEGIN"), ("0/2", delete + "1"), ("0/3", "COMMIT"),
             ("0/4", "BEGIN"), ("0/5", delete + "2"), ("0/6", "COMMIT")]
    assert batch_end(lines, "0/9", 0) == (6, "0/9", False)  # no bound: everything up to the flush
    assert batch_end(lines, "0/9", 7) == (6, "0/9", False)  # under the bound: the peek reached the flush
    assert batch_end(lines, "0/9", 6) == (6, "0/6", True)  # at the bound: cut at the last COMMIT
    assert batch_end(lines[:5], "0/9", 5) == (3, "0/3", True)
    with pytest.raises(cdc_run.CdcDecodeError):
        batch_end(lines[:2], "0/9", 2)


@pytest.fixture
def loaded(totesys_url, warehouse_url, pipeline_env, cdc_mode, monkeypatch):
    """Scale-1 totesys loaded in CDC mode by a snapshot cut at MAX_BATCH_ROWS = 20,000 (about 47,500 rows of
    the four bounded tables: three rounds, as the state machine loops them); returns (source, warehouse,
    slot, rounds)."""
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    monkeypatch.setenv("MAX_BATCH_ROWS", "20000")
    rounds = []
    while True:
        files, transformed = one_round()
        rounds.append(files)
        assert ingest_state()["cdc"]["slot"] == cdc_mode
        if not transformed.get("more_waiting"):
            break
        assert len(rounds) < 10
    return totesys_url, warehouse_url, cdc_mode, rounds


def backlog(source):
    """TRANSACTIONS transactions of PER_TRANSACTION payment updates each, and one transaction open across
    all of them (two updates, the first written before them, committed after them)."""
    spanning = connect_to_db(credentials_from_url(source), timezone=None)
    try:
        spanning.run("START TRANSACTION")
        spanning.run("UPDATE payment SET payment_amount = 1.11, last_updated = localtimestamp "
                     "WHERE payment_id = 1000")
        for number in range(TRANSACTIONS):
            first = 100 + number * PER_TRANSACTION
            run_sql(source, "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp "
                            "WHERE payment_id BETWEEN :a AND :b", a=first, b=first + PER_TRANSACTION - 1)
        spanning.run("UPDATE payment SET payment_amount = 2.22, last_updated = localtimestamp "
                     "WHERE payment_id = 1001")
        spanning.run("COMMIT")
    finally:
        close_db_connection(spanning)


def test_a_large_snapshot_then_a_backlog_land_in_bounded_batches_of_whole_transactions_even_across_kills(
        loaded, monkeypatch):
    source, warehouse, slot, rounds = loaded
    assert len(rounds) == 3  # the snapshot: cut twice, whole on the third round
    assert ingest_state()["more_waiting"] is False
    assert_warehouse_exact(source, warehouse)
    s3 = boto3.client("s3")
    assert max(landed_versions(s3, _bucket()).values()) == 1

    backlog(source)
    monkeypatch.setenv("MAX_BATCH_ROWS", str(BOUND))
    batches = []

    def killed(*args):
        raise KeyboardInterrupt("killed between landing and confirming")

    # Batch 1 lands; the run dies before the slot advances. The next run advances it to the landed batch
    # first: nothing is landed twice.
    position = slot_row(source, slot)[0]
    with monkeypatch.context() as patch:
        patch.setattr(cdc_run, "advance_slot", killed)
        with pytest.raises(KeyboardInterrupt):
            ingest.lambda_handler({}, None)
    state = ingest_state()
    assert slot_row(source, slot)[0] == position and state["cdc"]["lsn"] != position
    assert state["more_waiting"] is True
    batches.append(read_json(s3, _bucket(), state["manifest_key"]))
    transform.lambda_handler({}, None)
    load.lambda_handler({}, None)

    # Batch 2 dies before its state pointer: its objects are orphans, the slot and the state stay.
    with monkeypatch.context() as patch:
        patch.setattr(cdc_run, "write_ingest_state", killed)
        with pytest.raises(KeyboardInterrupt):
            ingest.lambda_handler({}, None)
    assert ingest_state() == state

    while True:
        files, transformed = one_round()
        state = ingest_state()
        if files:
            batches.append(read_json(s3, _bucket(), state["manifest_key"]))
        assert slot_row(source, slot)[0] == state["cdc"]["lsn"]  # confirmed up to what was landed
        if not transformed.get("more_waiting"):
            break
        assert len(batches) < 20
    payments = [sorted(read_table(s3, _bucket(), batch["tables"]["payment"]["key"])["payment_id"].to_pylist())
                for batch in batches]
    # Four batches of three whole transactions each, then the spanning transaction's two rows together.
    per_batch = 3 * PER_TRANSACTION
    assert [len(ids) for ids in payments] == [per_batch] * 4 + [2]
    assert payments[-1] == [1000, 1001]
    assert sorted(sum(payments[:4], [])) == list(range(100, 100 + TRANSACTIONS * PER_TRANSACTION))
    assert max(landed_versions(s3, _bucket()).values()) == 1
    assert_warehouse_exact(source, warehouse)
    assert run_sql(warehouse, "SELECT payment_amount::text FROM current_payment WHERE payment_id = 1001") \
        == [["2.22"]]
