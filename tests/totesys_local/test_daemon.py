"""`totesys run` through the local emulator (totesys_local.daemon): real PostgreSQL, real moto, a real
emulator process started by the client. Every test stops the emulators it started."""
import os
import re
import signal
import stat
import subprocess  # nosec B404 - runs this project's own CLI
import sys
import time
from pathlib import Path

import pytest

from tests.support.db import connect, run_sql
from totesys_local.cli import main
from totesys_local.daemon import client, protocol

pytestmark = pytest.mark.slow  # each starts an emulator (a few seconds)


@pytest.fixture
def emulator(monkeypatch):
    """Switch the emulator on for this test; stop every emulator of the state folders it names."""
    monkeypatch.setenv("TOTESYS_DAEMON", "on")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    folders = []
    yield folders.append
    for folder in folders:
        client.stop(folder, timeout=30)
        assert client.running_pid(folder) is None


def _pid(state):
    return int((state / protocol.PID_NAME).read_text())


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except OSError:
        return False


def _wait(predicate, seconds=30):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _shape(text, *variable):
    """The output without what differs between two equal runs: durations, times, paths, names."""
    for value in variable:
        text = text.replace(str(value), "<var>")
    text = re.sub(r"\d+\.\d+ s\b", "<s>", text)
    text = re.sub(r"(ingest|transform|load) \d+\.\d+", r"\1 <s>", text)
    text = re.sub(r"to \d{4}-\d\d-\d\d [\d:.]+", "to <time>", text)
    return re.sub(r"run-\d{8}T\d{6}-[0-9a-f]{6}", "run-<id>", text)


def _interruptible():
    """In the child before exec: Ctrl-C's signal as a terminal gives it (a suite started in the background
    by a non-interactive shell inherits SIGINT ignored, and Python then never turns it into
    KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*argv):
    """`totesys argv` as a child process, its output read as it comes."""
    command = [sys.executable, "-m", "totesys_local.cli", *argv]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,  # nosec
                            env=dict(os.environ), preexec_fn=_interruptible)


def _read_until(stream, text):
    lines = []
    for line in stream:
        lines.append(line)
        if text in line:
            return "".join(lines)
    raise AssertionError(f"{text!r} never came: {''.join(lines)}")


def test_runs_go_through_one_emulator_and_print_what_an_in_process_run_prints(
        tmp_path, capsys, monkeypatch, emulator, source_url, warehouse_url, new_database):
    """On the small known source: what is compared is the emulator's serving, whatever the data's size
    (the scale-1 runs through it are the kill and interrupt tests below)."""
    state = tmp_path / "state"
    emulator(state)
    args = ["run", "--source", source_url, "--warehouse", warehouse_url, "--state-dir", str(state)]

    assert main(args) == 0
    first = capsys.readouterr()
    pid = _pid(state)
    assert f"local emulator started, pid {pid}; it stops after 15 min idle or with `make stop`" in first.err
    assert "[1/3] ingest    running ..." in first.out and "rows loaded" in first.out
    assert _alive(pid) and client.running_pid(state) == pid
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0] == \
        run_sql(source_url, "SELECT count(*) FROM sales_order")[0][0]

    assert main(args) == 0
    second = capsys.readouterr()
    assert _pid(state) == pid and "started" not in second.err  # the same emulator served it
    assert "nothing new" in second.out and "[3/3] load      done in" in second.out

    # The same command in-process, into a warehouse of its own: the same lines, bar times and names.
    monkeypatch.setenv("TOTESYS_DAEMON", "off")
    other_state, other_warehouse = tmp_path / "in-process", new_database()
    assert main(["run", "--source", source_url, "--warehouse", other_warehouse,
                 "--state-dir", str(other_state)]) == 0
    in_process = capsys.readouterr()
    assert _shape(first.out, state, warehouse_url.rsplit("/", 1)[1]) == \
        _shape(in_process.out, other_state, other_warehouse.rsplit("/", 1)[1])
    assert in_process.err == "" and not (other_state / protocol.PID_NAME).exists()


def test_a_failed_run_exits_1_with_its_one_line_error(tmp_path, capsys, emulator, source_url, warehouse_url):
    from totesys_local.cluster import free_port
    state = tmp_path / "state"
    emulator(state)
    down = f"postgresql://nobody:pw@127.0.0.1:{free_port()}/nowhere"
    assert main(["run", "--source", source_url, "--warehouse", down, "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("local emulator started, pid ")
    assert len(err) == 2 and err[1].startswith(
        "totesys run: FAILED: ToteSys pipeline FAILED in stage load: DatabaseUnavailableError")
    assert (state / "last_error.json").exists()
    # the emulator lives on and serves the retry (exit 0: nothing pends once the warehouse is back)
    pid = _pid(state)
    retry = ["retry", "--source", source_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    assert main(retry) == 0
    assert "retrying:" in capsys.readouterr().out and _pid(state) == pid
    assert not (state / "last_error.json").exists()


def test_changed_code_on_disk_restarts_the_emulator(tmp_path, capsys, emulator, source_url, warehouse_url):
    state = tmp_path / "state"
    emulator(state)
    args = ["run", "--source", source_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    assert main(args) == 0
    old = _pid(state)
    capsys.readouterr()
    code = Path(protocol.__file__).with_name("__init__.py")
    before, text = code.stat(), code.read_bytes()
    code.write_bytes(text + b"# an edit\n")  # content, not mtime, is what counts
    try:
        assert main(args) == 0
        new = _pid(state)
        assert new != old and f"local emulator started, pid {new}" in capsys.readouterr().err
        _wait(lambda: not _alive(old))
        assert "the code on disk changed" in (state / protocol.LOG_NAME).read_text()
    finally:
        code.write_bytes(text)
        os.utime(code, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_idle_timeout_and_the_short_socket_of_a_long_state_folder(
        tmp_path, capsys, monkeypatch, emulator, source_url, warehouse_url):
    monkeypatch.setenv(protocol.IDLE_VARIABLE, "2")
    state = tmp_path / ("a-long-state-folder-name-" * 5)
    emulator(state)
    sock = protocol.socket_path(state)
    assert len(os.fsencode(state / protocol.SOCKET_NAME)) > protocol.MAX_SOCKET_PATH
    assert sock.parent == protocol.private_temp_folder()
    assert len(os.fsencode(sock)) <= protocol.MAX_SOCKET_PATH
    assert main(["run", "--source", source_url, "--warehouse", warehouse_url, "--state-dir", str(state)]) == 0
    assert "it stops after 2 s idle" in capsys.readouterr().err
    pid = _pid(state)
    info = sock.stat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    _wait(lambda: not _alive(pid))
    assert not sock.exists() and not (state / protocol.PID_NAME).exists()
    assert "no request for 2 s: stopping" in (state / protocol.LOG_NAME).read_text()


def test_stop_stops_the_emulator(tmp_path, capsys, emulator, source_url, warehouse_url):
    state = tmp_path / "state"
    emulator(state)
    assert main(["run", "--source", source_url, "--warehouse", warehouse_url, "--state-dir", str(state)]) == 0
    pid = _pid(state)
    capsys.readouterr()
    assert main(["stop", "--state-dir", str(state)]) == 0
    assert f"local emulator stopped (pid {pid})" in capsys.readouterr().out
    assert not _alive(pid) and not (state / protocol.SOCKET_NAME).exists()
    assert client.stop(state) is None  # nothing left to stop
    (state / protocol.PID_NAME).write_text(f"{os.getpid()}\n")  # a pid that is not an emulator
    assert client.running_pid(state) is None and client.stop(state) is None


def test_a_killed_emulator_fails_the_client_clearly_and_the_next_run_reconciles(
        tmp_path, capsys, emulator, totesys_url, warehouse_url):
    """kill -9 of the emulator mid-run: the client says so in one line and exits 1; a second client
    meanwhile was told the folder is busy; the next run starts a fresh emulator and the warehouse
    ends with every row once."""
    state = tmp_path / "state"
    emulator(state)
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    first = _cli(*args)
    _read_until(first.stdout, "[1/3] ingest    running")
    assert main(args) == 1
    assert capsys.readouterr().err.strip() == \
        f"totesys run: FAILED: another totesys run is using {state}; wait for it to finish"
    killed = _pid(state)
    os.kill(killed, signal.SIGKILL)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 1
    assert err.splitlines()[-1] == (
        f"totesys run: FAILED: the local emulator (pid {killed}) stopped before the run finished (its log: "
        f"{state / protocol.LOG_NAME}); whatever the execution saved is kept: run again to go on")

    assert main(args) == 0
    assert f"local emulator started, pid {_pid(state)}" in capsys.readouterr().err
    sales = run_sql(totesys_url, "SELECT count(*) FROM sales_order")[0][0]
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0] == sales
    distinct = "SELECT count(DISTINCT sales_order_id) FROM fact_sales_order"
    assert run_sql(warehouse_url, distinct)[0][0] == sales


def test_an_interrupted_client_leaves_the_run_to_finish_and_save(tmp_path, capsys, emulator, totesys_url,
                                                                 warehouse_url):
    state = tmp_path / "state"
    emulator(state)
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    # The ingest waits on this lock until the client is gone: the interrupt always lands mid-run (a run
    # that finished before the signal arrived once made this test exit 0 on a loaded machine).
    holder = connect(totesys_url)
    try:
        holder.run("START TRANSACTION")
        holder.run("LOCK TABLE payment IN ACCESS EXCLUSIVE MODE")
        first = _cli(*args)
        _read_until(first.stdout, "[1/3] ingest    running")
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    finally:
        holder.run("ROLLBACK")
        holder.close()
    assert first.returncode == 130 and "the local emulator finishes the execution" in err
    pid = _pid(state)

    deadline = time.monotonic() + 120
    while True:  # busy until the interrupted run has finished and saved
        status, seen = main(args), capsys.readouterr()
        if status == 0 or "another totesys run" not in seen.err or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 0, seen.err
    # the interrupted run finished and saved its batch, in the same emulator
    assert "nothing new" in seen.out and _pid(state) == pid
    assert "client went away; the run goes on" in (state / protocol.LOG_NAME).read_text()


def test_the_emulator_can_be_switched_off_and_needs_moto(tmp_path, monkeypatch):
    assert client.enabled({}) and client.enabled({"TOTESYS_DAEMON": "on"})
    assert not client.enabled({"TOTESYS_DAEMON": "off"}) and not client.enabled({"TOTESYS_DAEMON": "0"})
    monkeypatch.setattr(client, "can_serve", lambda: False)
    assert client.run(["run", "--state-dir", str(tmp_path)], "run", tmp_path) is None  # runs in-process


def test_idle_seconds_and_their_wording():
    assert protocol.idle_seconds({}) == 900 and protocol.idle_seconds({protocol.IDLE_VARIABLE: "2.5"}) == 2.5
    assert protocol.idle_seconds({protocol.IDLE_VARIABLE: "soon"}) == 900
    assert protocol.idle_seconds({protocol.IDLE_VARIABLE: "-1"}) == 900
    assert protocol.describe_seconds(900) == "15 min" and protocol.describe_seconds(90) == "90 s"


def test_the_fingerprint_follows_code_and_import_time_variables():
    base = protocol.code_fingerprint({"PATH": "/bin"})
    assert protocol.code_fingerprint({"PATH": "/usr/bin"}) == base  # not read at import
    assert protocol.code_fingerprint({"PATH": "/bin", "LOG_LEVEL": "DEBUG"}) != base


def test_the_fingerprint_is_the_interpreters_whatever_name_started_it():
    """The console script starts venv/bin/python3, `python -m ...` venv/bin/python: one interpreter, so
    an emulator one started serves the other (a mismatch restarted it on every first run)."""
    names = [name for name in ("python", "python3") if Path(sys.executable).with_name(name).exists()]
    assert len(names) == 2
    prints = {subprocess.run([str(Path(sys.executable).with_name(name)), "-c",  # nosec B603
                              "from totesys_local.daemon.protocol import code_fingerprint as f; print(f())"],
                             capture_output=True, text=True, check=True).stdout for name in names}
    assert len(prints) == 1


def test_a_temp_folder_others_can_write_to_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    folder = protocol.private_temp_folder()
    folder.chmod(0o777)
    with pytest.raises(protocol.DaemonError, match="not a folder of this user only"):
        protocol.private_temp_folder()


def test_an_emulator_that_cannot_start_fails_the_run_in_one_line(tmp_path, capsys, monkeypatch, emulator):
    state = tmp_path / "state"
    emulator(state)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # a starter that exits 1 and says nothing
    assert main(["run", "--state-dir", str(state)]) == 1
    assert capsys.readouterr().err == (
        f"totesys run: FAILED: could not start the local emulator: no answer (its log: "
        f"{state.resolve() / protocol.LOG_NAME}); TOTESYS_DAEMON=off runs without it\n")


def test_client_streams_send_whole_lines_and_outlive_a_client_that_went_away():
    import json
    import socket

    from totesys_local.daemon.server import Channel, ClientStream
    ours, theirs = socket.socketpair()
    out = ClientStream(Channel(ours), "out")
    assert out.writable() and out.encoding == "utf-8"
    out.write("  [1/3] ingest")
    out.write("    running ...\npartial")
    out.flush()
    out.flush()  # nothing pending: nothing sent
    with theirs.makefile("rb") as stream:
        assert [json.loads(stream.readline()) for _ in range(2)] == [
            {"out": "  [1/3] ingest    running ...\n"}, {"out": "partial"}]
    theirs.close()
    for _ in range(100):  # the client is gone: writing goes on without an error
        out.write("x" * 10_000 + "\n")
    assert out.channel.gone


def test_exit_statuses_of_sys_exit(capsys):
    from totesys_local.daemon.server import _exit_status
    assert _exit_status(None) == 0 and _exit_status(2) == 2
    assert _exit_status("totesys: bad") == 1 and capsys.readouterr().err == "totesys: bad\n"


def test_a_second_emulator_of_a_folder_gives_way(tmp_path, monkeypatch):
    import fcntl

    from totesys_local.daemon import server
    monkeypatch.setattr(server, "LOCK_WAIT", 0.2)
    with open(tmp_path / protocol.LOCK_NAME, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert server._lock(tmp_path) is None
        answers = []
        assert server.serve(tmp_path, answers.append) == 1
    assert answers == [f"failed: {tmp_path / protocol.LOCK_NAME} is held by a process that is not a running "
                       "emulator"]
    lock = server._lock(tmp_path)
    assert lock is not None
    lock.close()
