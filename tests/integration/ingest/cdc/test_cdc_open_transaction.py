"""Defect 10 (docs/RELIABILITY.md, fixed): creating the slot for CDC's snapshot waits for every transaction
open on the source, until the session's lock_timeout (the invocation's remaining time minus the margin)
cancelled it with an error that named no transaction. Fixed: the wait is bounded (``slot.SLOT_WAIT_MS`` or
the session's lower lock_timeout) and the run fails with SlotWaitError (retryable) naming the open
transactions; no slot is left."""
from types import SimpleNamespace

import pytest

import ingest
from tests.support.cdc import slot_row
from tests.support.db import connect


def test_a_transaction_left_open_fails_the_first_cdc_run_naming_it_and_leaves_no_slot(env, cdc_mode):
    _, _, url = env
    holder = connect(url)
    try:
        holder.run("BEGIN")
        holder.run("UPDATE payment SET paid = NOT paid WHERE payment_id = 1")
        pid = holder.run("SELECT pg_backend_pid()")[0][0]
        # 13 s left in the invocation: 3 s for the run's statements and lock waits after the margin
        context = SimpleNamespace(aws_request_id="test", get_remaining_time_in_millis=lambda: 13_000)
        with pytest.raises(Exception) as failure:
            ingest.lambda_handler({}, context)
        assert slot_row(url, cdc_mode) is None
        assert str(pid) in str(failure.value), failure.value
    finally:
        holder.close()
