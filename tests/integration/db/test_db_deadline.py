"""The database's timeouts follow the function's: a connection opened in an invocation gets its
statement_timeout, lock_timeout, idle_in_transaction_session_timeout and socket read timeout from the
invocation's remaining time (utils.db.connection.session_timeouts), so a hung statement is cancelled by
the server, its locks released, before Lambda kills the function."""

import pg8000
import pytest

import utils.db.connection as db_connection
from tests.support.db import duration_seconds, lambda_context, run_sql
from utils.db.connection import (DEADLINE_MARGIN_SECONDS, close_db_connection, connect_to_db,
                                 credentials_from_url, set_invocation_deadline)


def test_sessions_opened_in_an_invocation_get_the_remaining_time_minus_the_margin(new_database):
    url = new_database()
    set_invocation_deadline(lambda_context(100))
    try:
        conn = connect_to_db(credentials_from_url(url))
    finally:
        set_invocation_deadline(None)
    try:
        statement = duration_seconds(conn.run("SHOW statement_timeout")[0][0])
        assert 100 - DEADLINE_MARGIN_SECONDS - 2 < statement <= 100 - DEADLINE_MARGIN_SECONDS
        assert duration_seconds(conn.run("SHOW lock_timeout")[0][0]) == statement
        assert 98 < duration_seconds(conn.run("SHOW idle_in_transaction_session_timeout")[0][0]) <= 100
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
    set_invocation_deadline(lambda_context(0.2))
    try:
        conn = connect_to_db(credentials_from_url(url))
    finally:
        set_invocation_deadline(None)
    try:
        statement = duration_seconds(conn.run("SHOW statement_timeout")[0][0])
        assert statement == db_connection.MINIMUM_BUDGET_SECONDS
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
        load.lambda_handler(transformed, lambda_context(DEADLINE_MARGIN_SECONDS + 1.5))
    assert cancelled.value.args[0]["C"] == "57014"
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order") == [[0]]
    assert run_sql(warehouse_url, "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
                   " AND datname = current_database()") == [[0]]

    monkeypatch.setattr(merge, "record_rejected", real_record_rejected)
    result = load.lambda_handler(transformed, lambda_context(600))
    assert len(result["batches"]) == 1
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order") == [[2]]
    assert load.lambda_handler(transformed, lambda_context(600))["batches"] == []
