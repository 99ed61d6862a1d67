"""The load keeps its warehouse connection for the next invocation in the same process (utils.db.kept): reused
when healthy, with that invocation's timeouts and nothing an earlier one left in the session; replaced when
the backend died, after a failed batch, when the secret was rotated, when too old; never kept when off.
Each case checks the batches land exactly once and the rollups still equal the facts."""

import pg8000
import pytest

import load
import transform
import utils.db.kept as kept
from tests.support.batches import T0, base_batch, later, sales_order, write_ingest_batch
from tests.support.db import connect, duration_seconds, lambda_context, run_sql
from totesys_local.aws_emulation import put_credentials_secret
from utils.db.connection import close_db_connection, credentials_from_url
from utils.errors import ConfigError
from utils.load import merge
from utils.load.rollups import compare_rollups
from utils.load.schema import LEDGER


def kept_backend():
    return kept.keeper("warehouse").kept_backend


def backend_alive(url, pid):
    return run_sql(url, "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=pid) == [[1]]


def ledger_rows(url):
    return run_sql(url, f"SELECT count(*) FROM {LEDGER}")[0][0]  # nosec B608 - fixed name


def rollups_equal_facts(url):
    conn = connect(url)
    try:
        return compare_rollups(conn) == []
    finally:
        close_db_connection(conn)


@pytest.fixture
def warehouse(pipeline_env, warehouse_url):
    pipeline_env(warehouse_url=warehouse_url)
    return warehouse_url


@pytest.fixture
def batches(s3, buckets, warehouse):
    """load(n): write and transform the n-th batch (1: the base batch, then one changed order each)
    and load it; returns the load's result."""
    def load_next(number, context=None):
        if number == 1:
            write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
        else:
            write_ingest_batch(s3, buckets["ingest"], later(30 * number), {
                "sales_order": [sales_order(1, at=T0, updated=later(30 * number - 5), units_sold=number)]})
        return load.lambda_handler(transform.lambda_handler({}, None), context)
    return load_next


def test_the_next_invocation_reuses_the_session_with_its_own_timeouts_and_nothing_left_behind(
        batches, warehouse, monkeypatch):
    assert len(batches(1, lambda_context(600))["batches"]) == 1
    first = kept_backend()
    assert first is not None
    # The kept backend is idle, outside any transaction, holding no lock.
    assert run_sql(warehouse, "SELECT state, backend_xid IS NULL FROM pg_stat_activity WHERE pid = :pid",
                   pid=first) == [["idle", True]]
    assert run_sql(warehouse, "SELECT count(*) FROM pg_locks WHERE pid = :pid", pid=first) == [[0]]

    seen = []
    real_update = merge.update_rollups

    def leaky_update(conn, *args, **kwargs):
        """Record what the session holds, then leave what a careless statement would: a session
        setting, a session advisory lock, a temporary table, a prepared statement."""
        seen.append(conn.run("SELECT pg_backend_pid(), current_setting('statement_timeout'), "
                             "current_setting('work_mem'), current_setting('jit'), "
                             "(SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
                             "AND locktype = 'advisory' AND objid = 4242), "
                             "to_regclass('pg_temp.leak') IS NULL, "
                             "(SELECT count(*) FROM pg_prepared_statements)")[0])
        conn.run("SET work_mem = '77MB'")
        conn.run("SELECT pg_advisory_lock(4242)")
        conn.run("CREATE TEMPORARY TABLE IF NOT EXISTS leak (x int)")
        conn.run("PREPARE leaked AS SELECT 1")
        return real_update(conn, *args, **kwargs)

    monkeypatch.setattr(merge, "update_rollups", leaky_update)
    batches(2, lambda_context(100))
    batches(3, lambda_context(300))
    (pid2, timeout2, *_), (pid3, timeout3, work_mem, jit, locks, no_temp, prepared) = seen
    assert pid2 == pid3 == first  # the same backend all along
    # Each invocation's statement_timeout follows its own remaining time (minus the 10 s margin).
    assert 85 < duration_seconds(timeout2) <= 90 and 285 < duration_seconds(timeout3) <= 290
    # What the second invocation left is gone before the third ran (work_mem within the batch is the
    # rollups' SET LOCAL; the server default here, 4MB, outside it: a leak would read 77MB).
    assert work_mem != "77MB" and locks == 0 and no_temp and prepared == 0
    assert run_sql(warehouse, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [[0]]
    assert ledger_rows(warehouse) == 3
    assert rollups_equal_facts(warehouse)


def test_a_backend_terminated_between_invocations_is_replaced_and_the_batch_loads(
        batches, warehouse, caplog):
    batches(1)
    first = kept_backend()
    run_sql(warehouse, "SELECT pg_terminate_backend(:pid, 10000)", pid=first)
    result = batches(2)
    assert len(result["batches"]) == 1 and result["tables"]["fact_sales_order"] == 1
    assert kept_backend() not in (None, first)
    assert "kept warehouse connection not reused: the check before reuse failed" in caplog.text
    assert ledger_rows(warehouse) == 2
    assert run_sql(warehouse, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 1") == [[2]]
    assert rollups_equal_facts(warehouse)


def test_a_batch_failing_inside_its_transaction_closes_the_session_and_the_retry_loads_it_once(
        batches, warehouse, monkeypatch):
    batches(1)
    first, real_update = kept_backend(), merge.update_rollups

    def failing_update(conn, *args, **kwargs):
        conn.run("SELECT 1 / 0")  # the transaction is now failed (25P02 for anything but ROLLBACK)

    monkeypatch.setattr(merge, "update_rollups", failing_update)
    with pytest.raises(pg8000.exceptions.DatabaseError):
        batches(2)
    assert kept_backend() is None and not backend_alive(warehouse, first)
    assert ledger_rows(warehouse) == 1
    monkeypatch.setattr(merge, "update_rollups", real_update)
    # The retry (the batch is already transformed): a clean new session, the batch loaded once.
    assert len(load.lambda_handler({}, None)["batches"]) == 1
    assert kept_backend() not in (None, first)
    assert load.lambda_handler({}, None)["batches"] == []
    assert ledger_rows(warehouse) == 2
    assert rollups_equal_facts(warehouse)


def test_a_rotated_secret_gets_a_new_session_and_the_old_one_is_closed(batches, warehouse, pg_admin_url,
                                                                       caplog):
    """The warehouse's owner is a role of its own; its password is rotated (ALTER ROLE, then the secret's
    new version), as Secrets Manager's rotation does."""
    role = f"rot_{warehouse.rsplit('/', 1)[1]}"
    database = credentials_from_url(warehouse)["database"]
    run_sql(pg_admin_url, f"CREATE ROLE {role} LOGIN PASSWORD 'first-password'")
    run_sql(pg_admin_url, f"ALTER DATABASE {database} OWNER TO {role}")
    try:
        put_credentials_secret("test/warehouse", warehouse, user=role, password="first-password")
        batches(1)
        first = kept_backend()
        assert run_sql(warehouse, "SELECT usename FROM pg_stat_activity WHERE pid = :pid",
                       pid=first) == [[role]]
        run_sql(pg_admin_url, f"ALTER ROLE {role} PASSWORD 'second-password'")
        put_credentials_secret("test/warehouse", warehouse, user=role, password="second-password")
        assert len(batches(2)["batches"]) == 1
        assert kept_backend() not in (None, first) and not backend_alive(warehouse, first)
        assert "the credentials or connection settings changed" in caplog.text
        assert rollups_equal_facts(warehouse)
    finally:
        kept.close_kept_connections()
        run_sql(warehouse, f"REASSIGN OWNED BY {role} TO CURRENT_USER")
        run_sql(pg_admin_url, f"ALTER DATABASE {database} OWNER TO CURRENT_USER")
        run_sql(pg_admin_url, f"DROP ROLE {role}")


def test_a_session_older_than_the_setting_is_replaced(batches, warehouse, monkeypatch, caplog):
    monkeypatch.setenv("WAREHOUSE_KEEP_CONNECTION_SECONDS", "60")
    batches(1)
    first = kept_backend()
    now = kept.clock()
    monkeypatch.setattr(kept, "clock", lambda: now + 61)
    batches(2)
    assert kept_backend() not in (None, first) and not backend_alive(warehouse, first)
    assert "older than 60 s" in caplog.text


def test_keeping_off_leaves_no_session_open(batches, warehouse, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_KEEP_CONNECTION_SECONDS", "0")
    batches(1)
    batches(2)
    assert kept_backend() is None
    assert run_sql(warehouse, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                              "AND pid <> pg_backend_pid() AND backend_type = 'client backend'") == [[0]]
    assert ledger_rows(warehouse) == 2


@pytest.mark.parametrize("value", ["-1", "an hour", "1.5"])
def test_a_bad_keep_setting_is_refused(value, monkeypatch, aws_env):
    from utils.config import load_settings
    monkeypatch.setenv("WAREHOUSE_KEEP_CONNECTION_SECONDS", value)
    with pytest.raises(ConfigError, match="WAREHOUSE_KEEP_CONNECTION_SECONDS"):
        load_settings()
