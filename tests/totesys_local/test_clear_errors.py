"""Errors that say what happened (issue 19, item 8): a full disk names the file, the moment of the run
and keeps last_error.json when it can; a refused connection says "connection refused"; a load user
without CREATE is told which privilege it lacks."""
import errno
import json
import logging
import os
import socket
import uuid

import pg8000
import pyarrow as pa
import pytest
from pg8000.native import identifier, literal

from tests.support.db import run_sql
from totesys_local import local_state
from totesys_local.cli import main
from totesys_local.cluster import free_port
from utils.db.connection import connect_to_db, credentials_from_url, network_reason
from utils.errors import DatabaseUnavailableError
from utils.load.staging import start_staging, why_staging_failed

REAL_FSYNC = os.fsync


def _full_disk_under(folder):
    """An os.fsync that fails as a full disk does (ENOSPC) for every file under ``folder``: the one part
    of the machine a test cannot really fill."""
    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return REAL_FSYNC(fd)
    return fsync


def test_a_write_that_fails_names_its_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _full_disk_under(tmp_path))
    with pytest.raises(OSError) as raised:
        local_state.write_atomically(tmp_path / "a" / "b.json", b"{}")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "a" / "b.json")
    assert list((tmp_path / "a").iterdir()) == []  # no temporary file left behind


@pytest.mark.slow
def test_a_full_disk_names_the_path_and_the_stage_and_keeps_last_error(tmp_path, capsys, monkeypatch,
                                                                       totesys_url, warehouse_url):
    state = tmp_path / "state"
    monkeypatch.setattr(os, "fsync", _full_disk_under(state / "s3"))
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"{state}/s3/" in err, err
    assert "after the load stage" in err and "last_error.json" in err
    recorded = json.loads((state / "last_error.json").read_text())
    assert recorded["stage"] == "save" and "No space left on device" in recorded["message"]


def test_a_refused_connection_says_so():
    credentials = {"host": "127.0.0.1", "port": free_port(), "database": "totesys", "user": "ann",
                   "password": "pw"}
    with pytest.raises(DatabaseUnavailableError, match="connection refused"):
        connect_to_db(credentials)


def test_run_says_the_source_refused_the_connection(tmp_path, capsys):
    url = f"postgresql://ann:pw@127.0.0.1:{free_port()}/totesys"
    assert main(["seed", "--target", url]) == 1
    assert "connection refused" in capsys.readouterr().err


@pytest.fixture
def load_log():
    """The load logger's lines, as formatted JSON."""
    from utils.load.staging import logger
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(logger.registered_formatter)
    target = logging.getLogger(logger.service)
    target.addHandler(handler)
    yield lines
    target.removeHandler(handler)


def test_a_load_user_without_create_is_told_the_privilege_it_lacks(pg_admin_url, warehouse_url, load_log):
    name, password = f"load_{uuid.uuid4().hex[:8]}", "pw-load"
    run_sql(pg_admin_url, f"CREATE ROLE {identifier(name)} LOGIN PASSWORD {literal(password)}")
    try:
        where = credentials_from_url(warehouse_url)
        run_sql(warehouse_url, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        limited = dict(where, user=name, password=password)
        staging = start_staging(lambda: connect_to_db(limited), {"dim_date": pa.table({"a": [1]})},
                                lambda table: "a integer", lambda table: "a")
        assert staging is None  # the batch stages in its own transaction instead
        line = next(line for line in load_log if "staging in the batch's own transaction" in line)
        assert "lacks the CREATE privilege" in line and "permission denied for schema public" in line
        assert "the staging connection failed" not in line
    finally:
        run_sql(warehouse_url, f"DROP OWNED BY {identifier(name)}")
        run_sql(pg_admin_url, f"DROP ROLE IF EXISTS {identifier(name)}")


@pytest.mark.parametrize("cause, words", [
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (TimeoutError("timed out"), "timed out after"),
    (socket.gaierror(-2, "Name or service not known"), "host name not found (Name or service not known)"),
    (OSError(113, "No route to host"), "No route to host (OSError)"),
])
def test_the_reason_behind_pg8000s_interface_error_is_kept(cause, words):
    try:
        try:
            raise cause
        except OSError as err:
            raise pg8000.exceptions.InterfaceError("Can't create a connection to host h and port 1") from err
    except pg8000.exceptions.InterfaceError as wrapped:
        assert words in network_reason(wrapped)


def test_why_staging_failed_names_each_cause():
    assert "could not create its table (42P07 exists)" in why_staging_failed(
        pg8000.exceptions.DatabaseError({"C": "42P07", "M": "exists"}))
    assert "the staging connection failed" in why_staging_failed(DatabaseUnavailableError("down"))
    assert "(ValueError: odd)" in why_staging_failed(ValueError("odd"))
