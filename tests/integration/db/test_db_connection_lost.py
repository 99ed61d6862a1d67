"""A session lost at any statement becomes DatabaseUnavailableError (retryable); a statement that is
wrong, or runs longer than statement_timeout, does not. Real PostgreSQL: the backend is terminated with
``pg_terminate_backend`` from another connection at a moment the test controls."""
import io
import socket

import pg8000.exceptions
import pytest

from tests.support.db import run_sql
from utils.db import connection as db_connection
from utils.db.connection import close_db_connection, connect_to_db, connection_lost, credentials_from_url
from utils.errors import DatabaseUnavailableError
from utils.ingest.copy_reader import copy_out

PASSWORD_PARAMETER = "never-in-a-message"


@pytest.fixture
def session(new_database):
    """(url, an open connection to a fresh database, its backend pid); the connection is closed after."""
    url = new_database()
    conn = connect_to_db(credentials_from_url(url), role="warehouse")
    pid = conn.run("SELECT pg_backend_pid()")[0][0]
    yield url, conn, pid
    close_db_connection(conn)


def _terminate(url, pid):
    """From another connection: end the backend ``pid`` and wait until it is gone."""
    assert run_sql(url, "SELECT pg_terminate_backend(:pid, 10000)", pid=pid) == [[True]]


def _assert_lost(raised, verb):
    message = str(raised.value)
    assert message.startswith("lost the connection to database at 127.0.0.1:")
    assert f" (warehouse) during {verb}: " in message
    assert PASSWORD_PARAMETER not in message


class _KillOnFirstWrite:
    """A COPY TO STDOUT stream that terminates its own backend when the first rows arrive."""

    def __init__(self, url, pid):
        self.url, self.pid, self.writes = url, pid, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 1:
            _terminate(self.url, self.pid)


# Each row is larger than the server's 8 kB send buffer (so it is sent at once) and the next one is
# 0.2 s away: when the first row arrives the server is certainly still inside the COPY.
SLOW_COPY = ("COPY (SELECT repeat('x', 10000), pg_sleep(0.2) FROM generate_series(1, 50)) "
             "TO STDOUT WITH (FORMAT csv)")


@pytest.mark.parametrize("reader", ["copy_reader", "pg8000"])
def test_a_connection_lost_mid_copy_out_is_retryable(session, reader):
    url, conn, pid = session
    stream = _KillOnFirstWrite(url, pid)
    with pytest.raises(DatabaseUnavailableError) as raised:
        if reader == "copy_reader":
            copy_out(conn, SLOW_COPY, stream)
        else:
            conn.run(SLOW_COPY, stream=stream)
    _assert_lost(raised, "COPY")
    assert stream.writes >= 1


def test_a_connection_lost_mid_copy_in_is_retryable(session):
    url, conn, pid = session
    conn.run("CREATE TABLE target (line text)")

    class KillAfterFirstBlock(io.BytesIO):
        def readinto(self, buffer):
            if self.tell():
                _terminate(url, pid)
            return super().readinto(buffer)

    rows = KillAfterFirstBlock(b"".join(b"%d\n" % n for n in range(100_000)))
    conn.run("START TRANSACTION")
    with pytest.raises(DatabaseUnavailableError) as raised:
        conn.run("COPY target FROM STDIN", stream=rows)
    _assert_lost(raised, "COPY")
    assert run_sql(url, "SELECT count(*) FROM target") == [[0]]


@pytest.mark.parametrize("statement, verb", [
    ("INSERT INTO target SELECT :value ON CONFLICT DO NOTHING", "INSERT"),
    ("COMMIT", "COMMIT"),
])
def test_a_connection_lost_in_a_transaction_is_retryable_at_the_next_statement(session, statement, verb):
    url, conn, pid = session
    conn.run("CREATE TABLE target (line text PRIMARY KEY)")
    conn.run("START TRANSACTION")
    conn.run("INSERT INTO target VALUES ('staged')")
    _terminate(url, pid)
    params = {"value": PASSWORD_PARAMETER} if ":value" in statement else {}
    with pytest.raises(DatabaseUnavailableError) as raised:
        conn.run(statement, **params)
    _assert_lost(raised, verb)
    assert run_sql(url, "SELECT count(*) FROM target") == [[0]]
    with pytest.raises(DatabaseUnavailableError, match="during SELECT: InterfaceError"):
        conn.run("SELECT 1")  # the connection stays dead, and says so


def test_a_wrong_statement_is_not_a_lost_connection(session):
    _, conn, _ = session
    conn.run("CREATE TABLE target (line text PRIMARY KEY)")
    conn.run("INSERT INTO target VALUES ('one')")
    with pytest.raises(pg8000.exceptions.DatabaseError) as raised:
        conn.run("INSERT INTO target VALUES ('one')")
    assert raised.value.args[0]["C"] == "23505"
    with pytest.raises(pg8000.exceptions.DatabaseError, match="42601"):
        conn.run("SELEC 1")
    assert conn.run("SELECT 1") == [[1]]


@pytest.mark.parametrize("code, lost", [
    ("57P01", True), ("57P02", True), ("57P03", True), ("08006", True), ("08003", True),
    ("57014", False), ("40001", False), ("23505", False), ("53300", False)])
def test_which_server_errors_mean_the_session_is_gone(code, lost):
    assert connection_lost(pg8000.exceptions.DatabaseError({"C": code, "M": "m"})) is lost
    assert connection_lost(pg8000.exceptions.InterfaceError("network error"))
    assert connection_lost(ConnectionResetError())
    assert not connection_lost(ValueError("not a database error"))


# -- timeouts: a long statement is not a lost connection --------------------------------------------

def test_sessions_get_the_statement_timeout_and_the_longer_read_timeout(session):
    _, conn, _ = session
    assert conn.run("SHOW statement_timeout") == [["15min"]]
    assert conn._usock.gettimeout() == db_connection.READ_TIMEOUT_SECONDS
    assert db_connection.READ_TIMEOUT_SECONDS > db_connection.STATEMENT_TIMEOUT_SECONDS


def test_sessions_send_small_writes_at_once_and_copy_in_does_not_wait_for_a_delayed_ack(session):
    """pg8000 writes COPY FROM STDIN as small writes; with Nagle's algorithm on, each COPY waited for the
    server's 40 ms delayed ACK (a load ran ~15 of them). The option, then its effect: 20 small COPYs."""
    _, conn, _ = session
    assert conn._usock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    conn.run("CREATE TEMPORARY TABLE nagle (a int, b text)")
    for _ in range(20):
        conn.run("COPY nagle FROM STDIN WITH (FORMAT csv)", stream=io.BytesIO(b"1,a\n2,b\n"))
    assert conn.run("SELECT count(*) FROM nagle") == [[40]]


def test_a_statement_silent_for_longer_than_the_connect_timeout_succeeds(new_database, monkeypatch):
    """The old helper used its 30 s connect timeout for every read: a statement silent that long died."""
    monkeypatch.setattr(db_connection, "CONNECT_TIMEOUT_SECONDS", 0.5)
    conn = connect_to_db(credentials_from_url(new_database()), role="totesys")
    try:
        assert conn.run("SELECT pg_sleep(1.2), 42")[0][1] == 42
    finally:
        close_db_connection(conn)


def test_a_statement_over_the_statement_timeout_is_cancelled_by_the_server_and_not_retried(
        new_database, monkeypatch):
    url = new_database()  # created before: CREATE DATABASE may take over 1 s on a busy machine
    monkeypatch.setattr(db_connection, "STATEMENT_TIMEOUT_SECONDS", 1)
    conn = connect_to_db(credentials_from_url(url), role="totesys")
    try:
        with pytest.raises(pg8000.exceptions.DatabaseError) as raised:
            conn.run("SELECT pg_sleep(5)")
        assert not isinstance(raised.value, DatabaseUnavailableError)
        assert raised.value.args[0]["C"] == "57014"
        assert raised.value.args[0]["M"] == "canceling statement due to statement timeout"
        assert conn.run("SELECT 1") == [[1]], "the session survives a cancelled statement"
    finally:
        close_db_connection(conn)
