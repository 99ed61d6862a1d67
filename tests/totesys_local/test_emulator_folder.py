"""The local emulator and its state folder (issue 19, item 9): it exits when the folder is deleted,
`totesys stop` finds every emulator of a folder (even one its pid file no longer names), a folder
deleted during a run is reported as such, and an edit is new code whatever its size and mtime."""
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support.db import run_sql
from totesys_local import runner
from totesys_local.cli import main
from totesys_local.daemon import client, protocol


def _wait(predicate, seconds=60):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except OSError:
        return False


@pytest.fixture
def started(tmp_path, monkeypatch):
    """Factory: start a real emulator of a state folder; every one started is stopped at the end."""
    monkeypatch.setenv("TOTESYS_DAEMON", "on")
    pids = []

    def start(state):
        state.mkdir(parents=True, exist_ok=True)
        pids.append(client.start(state))
        return pids[-1]

    yield start
    for pid in pids:
        if _alive(pid):
            os.kill(pid, 9)


@pytest.mark.slow
def test_the_emulator_exits_when_its_state_folder_is_deleted(tmp_path, started):
    state = tmp_path / "state"
    pid = started(state)
    assert _alive(pid)
    shutil.rmtree(state)
    _wait(lambda: not _alive(pid), seconds=30)  # within a tick or so; before, it lived 15 min idle


@pytest.mark.slow
def test_stop_finds_an_emulator_its_pid_file_does_not_name(tmp_path, started, capsys):
    state = tmp_path / "state"
    pid = started(state)
    (state / protocol.PID_NAME).unlink()  # as after the folder was made again
    assert main(["stop", "--state-dir", str(state)]) == 0
    assert f"local emulator stopped (pid {pid})" in capsys.readouterr().out
    _wait(lambda: not _alive(pid))


def test_an_edit_that_keeps_size_and_mtime_changes_the_fingerprint(tmp_path, monkeypatch):
    code = tmp_path / "module.py"
    code.write_text("LIMIT = 1\n")
    stamp = code.stat().st_mtime_ns
    monkeypatch.setattr(protocol, "CODE_FOLDERS", (tmp_path,))
    before = protocol.code_fingerprint({})
    code.write_text("LIMIT = 2\n")  # same size
    os.utime(code, ns=(stamp, stamp))  # same mtime
    assert protocol.code_fingerprint({}) != before


@pytest.mark.slow
def test_a_folder_deleted_during_a_run_is_reported_as_such(tmp_path, capsys, monkeypatch, totesys_url,
                                                           warehouse_url):
    state = tmp_path / "state"
    real = runner.stage_handlers

    def handlers(prefix):
        found = real(prefix)
        load = found[f"{prefix}-load"]

        def load_then_delete(event, context):
            answer = load(event, context)  # the load has committed
            shutil.rmtree(state)
            return answer
        found[f"{prefix}-load"] = load_then_delete
        return found

    monkeypatch.setattr(runner, "stage_handlers", handlers)
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"the state folder {state} was deleted during the run" in err, err
    assert "the execution itself SUCCEEDED and the warehouse holds batch(es)" in err
    assert not (state / "s3").exists()  # not made again with files that name missing ones
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0] > 0
