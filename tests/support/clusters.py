"""The test suite's own folder for PostgreSQL clusters, and removing it and every process it started,
whatever ends the run (issue 19, item 10). No tests here: tests/conftest.py calls these.

Every cluster the suite starts (the shared throwaway server, and the cluster of any state folder a test
uses) lives in ONE folder, ``$TMPDIR/totesys-tests-XXXX`` (``TOTESYS_PGDATA_PARENT``, inherited by child
processes), with ``owner`` naming the pytest process that made it. The folder is removed, its servers
stopped first, when the session ends, on Ctrl-C or SIGTERM (conftest turns it into KeyboardInterrupt),
and at interpreter exit; a session killed outright (SIGKILL) leaves it, and the next session removes
every such folder whose owner is gone. Local emulators of state folders under pytest's temporary folder
are stopped at the end too.
"""
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

FOLDER_PREFIX = "totesys-tests-"
OWNER_FILE = "owner"
STOP_SECONDS = 15


def _start_time(pid):
    """The start time of process ``pid`` (clock ticks since boot), or None when it does not run."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19]


def _owner_alive(folder):
    try:
        pid, started = (folder / OWNER_FILE).read_text().split()
    except (OSError, ValueError):
        return False  # a folder being made this instant has no owner yet: see sweep_abandoned
    return _start_time(int(pid)) == started


def make_session_folder():
    """A fresh ``totesys-tests-*`` folder in the temporary directory, owned by this process (mode 755:
    the server user enters it when we are root). Folders of sessions that are gone are removed first."""
    sweep_abandoned()
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    os.chmod(folder, 0o755)  # nosec B103 - the server user must enter it; each cluster's data is 0700
    (folder / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return folder


def sweep_abandoned(grace_seconds=60):
    """Remove every ``totesys-tests-*`` folder whose owning session no longer runs (killed outright),
    stopping its servers first. A folder younger than ``grace_seconds`` without an owner file is left:
    another session may be making it."""
    for folder in Path(tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        if _owner_alive(folder):
            continue
        if not (folder / OWNER_FILE).exists() and time.time() - folder.stat().st_mtime < grace_seconds:
            continue
        remove_session_folder(folder)


def processes_under(folder, marker=b""):
    """Pids of the processes whose command line names a path inside ``folder`` (and holds ``marker``)."""
    prefix = os.fsencode(str(folder).rstrip("/") + "/")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in b" ".join(arguments) and any(arg.startswith(prefix) for arg in arguments):
            found.append(int(entry.name))
    return found


def stop_processes(pids, first=signal.SIGTERM):
    """Send ``first`` to each pid, SIGKILL to those still running after STOP_SECONDS; wait for them."""
    for pid in pids:
        _signal(pid, first)
    deadline = time.monotonic() + STOP_SECONDS
    while True:
        running = [pid for pid in pids if _start_time(pid) is not None and not _zombie(pid)]
        if not running:
            return
        if time.monotonic() > deadline:
            for pid in running:
                _signal(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_SECONDS
        time.sleep(0.05)


def _zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _signal(pid, number):
    try:
        os.kill(pid, number)
    except (ProcessLookupError, PermissionError):
        pass


def remove_session_folder(folder):
    """Stop every server whose data is in ``folder`` (SIGQUIT: PostgreSQL's immediate shutdown, the
    data is scratch), then delete the folder."""
    folder = Path(folder)
    if not folder.exists():
        return
    stop_processes(processes_under(folder), first=signal.SIGQUIT)
    shutil.rmtree(folder, ignore_errors=True)


def stop_emulators_under(folder):
    """Stop the local emulators of state folders inside ``folder`` (pytest's temporary folder)."""
    stop_processes(processes_under(folder, marker=b"totesys_local.daemon"))
