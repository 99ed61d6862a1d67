"""The database's timeouts follow the function's: a connection opened in an invocation gets its
statement_timeout, lock_timeout, idle_in_transaction_session_timeout and socket read timeout from the
invocation's remaining time (utils.db.connection.session_timeouts), so a hung statement is cancelled by
the server, its locks released, before Lambda kills the function."""
from types import SimpleNamespace

import pg8000
import pytest

import utils.db.connection as db_connection
from tests.support.db import run_sql
from utils.db.connection import (DEADLINE_MARGIN_SECONDS, close_db_connection, connect_to_db,
                                 credentials_from_url, set_invocation_deadline)


def _context(seconds):
    return SimpleNamespace(aws_request_id="test", get_remaining_time_in_millis=lambda: int(seconds * 1000))


def _seconds(setting):
    """A PostgreSQL duration as SHOW gives it ('1500ms', '90s', '2min') in seconds."""
    for unit, factor in (("ms", 0.001), ("s", 1), ("min", 60), ("h", 3600)):
        if setting.endswith(unit) and setting[:-len(unit)].isdigit():
            return int(setting[:-len(unit)]) * factor
    raise AssertionError(setting)


def test_sessions_opened_in_an_invocation_get_the_remaining_time_minus_the_margin(new_database):
    url = new_database()
    set_invocation_deadline(_context(100))
    try:
        conn = connect_to_db(credentials_from_url(url))
    finally:
        set_invocation_deadline(None)
    try:
        statement = _seconds(conn.run("SHOW statement_timeout")[0][0])
        assert 100 - DEADLINE_MARGIN_SECONDS - 2 < statement <= 100 - DEADLINE_MARGIN_SECONDS
        assert _seconds(conn.run("SHOW lock_timeout")[0][0]) == statement
        assert 98 < _seconds(conn.run("SHOW idle_in_transaction_session_timeout")[0][0]) <= 100
        assert statement < conn._usock.gettimeout() < 100
    finally:
        close_db_connection(conn)
    outside = connect_to_db(credentials_from_url(url))
    try:
        assert outside.run("SHOW statement_timeout") == [["15min"]]
        assert outside._usock.gettimeout() == db_connection.READ_TIMEOUT_SECONDS
    finally:
        close_db_connection(outside)


def test_a_session_opened_with_almost_no_time_left_still_gets_a_positive_budget(new_database):
    url = new_database()  # created before the deadline: CREATE DATABASE is not what is tested
    set_invocation_deadline(_context(0.2))
    try:
        conn = connect_to_db(credentials_from_url(url))
    finally:
        set_invocation_deadline(None)
    try:
        assert _seconds(conn.run("SHOW statement_timeout")[0][0]) == db_connection.MINIMUM_BUDGET_SECONDS
    finally:
        close_db_connection(conn)


@pytest.mark.slow
def test_a_hung_load_statement_is_cancelled_by_the_server_the_batch_rolls_back_and_the_retry_loads_it(
        source_url, warehouse_url, pipeline_env, monkeypatch):
    """The load with 1.5 s left after the margin; a statement in its batch transaction sleeps 4 s: the
    server cancels it (57014), nothing of the batch is in the warehouse, and the next load (the retry,
    with its full time) loads the batch exactly once."""
    import ingest
    import load
    import transform
    from utils.load import merge
    pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    transformed = transform.lambda_handler(ingest.lambda_handler({}, None), None)
    real_record_rejected = merge.record_rejected

    def hung(conn, rejected, batch_id):
        conn.run("SELECT pg_sleep(4)")
        return real_record_rejected(conn, rejected, batch_id)

    monkeypatch.setattr(merge, "record_rejected", hung)
    with pytest.raises(pg8000.exceptions.DatabaseError) as cancelled:
        load.lambda_handler(transformed, _context(DEADLINE_MARGIN_SECONDS + 1.5))
    assert cancelled.value.args[0]["C"] == "57014"
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order") == [[0]]
    assert run_sql(warehouse_url, "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
                   " AND datname = current_database()") == [[0]]

    monkeypatch.setattr(merge, "record_rejected", real_record_rejected)
    result = load.lambda_handler(transformed, _context(600))
    assert len(result["batches"]) == 1
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order") == [[2]]
    assert load.lambda_handler(transformed, _context(600))["batches"] == []
