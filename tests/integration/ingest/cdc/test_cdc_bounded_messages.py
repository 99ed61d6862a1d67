"""Defect 11 (docs/RELIABILITY.md, fixed): with a small MAX_BATCH_ROWS, a bounded CDC peek can hold only the
marker messages of earlier runs' WAL flushes (``slot.flush_wal``: test_decoding writes a transactional
message of a transaction without row changes as one line, no BEGIN and no COMMIT, under skip-empty-xacts).
The batch found no COMMIT to end at and the run failed with CdcDecodeError, every time: ingest stayed
stuck until the cap was raised. Found by tests/infra/test_terraform_contracts.py in a CDC session (make
test-cdc, MAX_BATCH_ROWS=1). Fixed: such a peek is made again with twice the limit
(``utils.ingest.cdc.run.peek_batch``)."""
import boto3

import ingest
from tests.support.db import run_sql
from utils.aws.state import read_state


def test_a_batch_cut_before_an_earlier_run_s_flush_marker_goes_on_and_catches_up(env, cdc_mode, monkeypatch):
    _, bucket, url = env
    ingest.lambda_handler({}, None)  # the snapshot: the slot is created
    run_sql(url, "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp WHERE payment_id = 1")
    monkeypatch.setenv("MAX_BATCH_ROWS", "1")
    assert list(ingest.lambda_handler({}, None)) == ["payment"]  # cut at the update's COMMIT
    for _ in range(4):  # next in the slot: the previous run's flush marker, one line with no COMMIT
        ingest.lambda_handler({}, None)
        if not read_state(boto3.client("s3"), bucket, "ingest")[0]["more_waiting"]:
            break
    assert not read_state(boto3.client("s3"), bucket, "ingest")[0]["more_waiting"]
