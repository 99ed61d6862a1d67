"""utils.db.kept without a server: a kept session whose check finds a standby (a failed-over primary, now in
recovery) is closed and replaced; the key changes with each thing a connection is opened with (the real
sessions: tests/integration/db/test_db_kept.py, tests/integration/load/test_load_kept_connection.py)."""
import pytest
from pg8000.core import IDLE

from utils.db.kept import ConnectionKeeper, connection_key


class FakeSocket:
    def settimeout(self, seconds):
        self.timeout = seconds


class FakeConnection:
    """Answers the keeper's check with ``standby`` as pg_is_in_recovery(); records what it ran."""

    def __init__(self, standby=False):
        self.standby, self.ran, self.closed = standby, [], False
        self._transaction_status, self._usock = IDLE, FakeSocket()

    def run(self, sql, **params):
        self.ran.append(sql)
        return [[self.standby, "", "", ""]]

    def close(self):
        self.closed = True


def test_a_kept_session_on_a_standby_is_closed_and_a_new_one_opened():
    keeper, opened = ConnectionKeeper(), []

    def connect(standby):
        opened.append(FakeConnection(standby))
        return opened[-1]

    with keeper.session("key", lambda: connect(True), 60):
        pass
    with keeper.session("key", lambda: connect(False), 60) as session:
        assert not session.reused and session.dropped == "the server is in recovery (a standby)"
        assert session.conn is opened[1]
    assert opened[0].closed and not opened[1].closed
    assert "pg_is_in_recovery()" in opened[0].ran[-1]
    with keeper.session("key", lambda: connect(False), 60) as session:  # a primary's session is reused
        assert session.reused and session.conn is opened[1]
    keeper.close()
    assert opened[1].closed


CREDENTIALS = {"host": "db", "port": 5432, "database": "w", "user": "load", "password": "one"}


@pytest.mark.parametrize("change", [{"host": "other"}, {"port": 5433}, {"database": "x"}, {"user": "load2"},
                                    {"password": "two"}])
def test_the_key_changes_with_each_connection_parameter(change):
    assert connection_key(CREDENTIALS, "warehouse", "UTC") != \
        connection_key(dict(CREDENTIALS, **change), "warehouse", "UTC")


def test_the_key_changes_with_the_tls_settings_and_keeps_no_password(monkeypatch):
    before = connection_key(CREDENTIALS, "warehouse", "UTC")
    monkeypatch.setenv("WAREHOUSE_SSLMODE", "verify-full")
    assert connection_key(CREDENTIALS, "warehouse", "UTC") != before
    assert "one" not in before
