"""utils.db.kept.ConnectionKeeper on its own, against real servers: a session given back inside a
transaction is not kept; a forked child never uses its parent's session, which stays usable; the server
restarted between sessions (pg_ctl restart of a cluster of the test's own) gives a new session.
The load's cases (terminated backend, failed batch, rotated secret, age, off) are in
tests/integration/load/test_load_kept_connection.py."""
import multiprocessing

import pytest

from tests.support.db import run_sql
from utils.db.connection import connect_to_db, credentials_from_url
from utils.db.kept import ConnectionKeeper, backend_pid, connection_key


@pytest.fixture
def database(new_database):
    url = new_database()
    credentials = credentials_from_url(url)
    return url, connection_key(credentials, None, "UTC"), lambda: connect_to_db(credentials)


def test_a_session_given_back_inside_a_transaction_is_closed_not_kept(database):
    url, key, connect = database
    keeper = ConnectionKeeper()
    with keeper.session(key, connect, 60) as session:
        session.conn.run("START TRANSACTION")
        session.conn.run("CREATE TABLE half_done (x int)")
        pid = backend_pid(session.conn)
    assert keeper.kept_backend is None
    assert run_sql(url, "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=pid) == [[0]]
    assert run_sql(url, "SELECT to_regclass('half_done') IS NULL") == [[True]]


def _use_in_child(keeper, key, connect, answers):
    with keeper.session(key, connect, 60) as session:
        answers.put((session.reused, session.dropped, backend_pid(session.conn)))


def test_a_forked_child_opens_its_own_session_and_the_parents_stays_usable(database):
    url, key, connect = database
    keeper = ConnectionKeeper()
    with keeper.session(key, connect, 60):
        pass
    parent = keeper.kept_backend
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_use_in_child, args=(keeper, key, connect, answers))
    child.start()
    reused, dropped, child_pid = answers.get(timeout=60)
    child.join(60)
    assert (reused, dropped) == (False, "opened by another process (forked)") and child_pid != parent
    with keeper.session(key, connect, 60) as session:
        assert session.reused and session.conn.run("SELECT pg_backend_pid()") == [[parent]]
    keeper.close()


@pytest.mark.slow
def test_a_server_restarted_between_sessions_gives_a_new_session():
    import os

    from totesys_local.cluster import _run, temporary_cluster
    cluster = temporary_cluster()
    try:
        credentials = credentials_from_url(cluster.url())
        key, connect = connection_key(credentials, None, "UTC"), lambda: connect_to_db(credentials)
        keeper = ConnectionKeeper()
        with keeper.session(key, connect, 60) as session:
            session.conn.run("CREATE TABLE kept (x int)")
        before = keeper.kept_backend
        datadir = cluster.info.datadir  # restart: same port and options (postmaster.opts), fast shutdown
        restarted = _run([os.path.join(cluster.info.bindir, "pg_ctl"), "-D", datadir, "-m", "fast", "-w",
                          "-l", os.path.join(datadir, "server.log"), "restart"], check=False, timeout=120)
        assert restarted.returncode == 0, restarted.stderr
        with keeper.session(key, connect, 60) as session:
            assert not session.reused and session.dropped.startswith("the check before reuse failed")
            session.conn.run("INSERT INTO kept VALUES (1)")
        assert keeper.kept_backend not in (None, before)
        keeper.close()
    finally:
        cluster.destroy()
