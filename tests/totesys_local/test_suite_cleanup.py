"""The suite removes every cluster folder and server it starts, also when interrupted (issue 19, item
10): a child pytest session, with this suite's conftest, starts the shared server and a state folder's
own cluster; whether it ends normally, on Ctrl-C, on SIGTERM or is killed outright (then the next
session sweeps), no cluster folder and no server of it is left in its temporary directory."""
import os
import signal
import shutil
import subprocess  # nosec B404 - runs pytest on a test of our own
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.clusters import processes_under

pytestmark = pytest.mark.slow  # child pytest sessions, each a few seconds

REPO = Path(__file__).resolve().parents[2]
CHILD_TEST = '''
import time
from pathlib import Path
from totesys_local.cluster import local_cluster

def test_starts_clusters_and_maybe_waits(pg_admin_url, tmp_path):
    local_cluster(tmp_path / "state")  # left running on purpose, as a test that fails halfway would
    Path({marker!r}).write_text("started")
    if {wait}:
        time.sleep(120)
'''


@pytest.fixture
def private_tmp():
    """A temporary directory of the child session's own (mode 755: the server user must enter it)."""
    folder = Path(tempfile.mkdtemp(prefix="totesys-suite-check-"))
    os.chmod(folder, 0o755)  # nosec B103
    yield folder
    for pid in processes_under(folder):  # only if the test failed: do not leak what it checks
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _child(tmp, wait):
    marker = tmp / "started"
    test = tmp / "child" / "test_child.py"
    test.parent.mkdir()
    test.write_text(CHILD_TEST.format(marker=str(marker), wait=wait))
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(REPO))
    env.pop("TOTESYS_PGDATA_PARENT", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
               "--rootdir", str(tmp / "child"), str(test)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,  # nosec B603
                               stderr=subprocess.STDOUT, preexec_fn=_interruptible)
    return process, marker


def _interruptible():
    """In the child before exec: SIGINT as a terminal gives it (a suite started in the background by a
    non-interactive shell inherits it ignored, and the child would then never see the interrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _clusters_left(tmp):
    folders = [p.name for p in tmp.iterdir() if p.name.startswith(("totesys-pg", "totesys-tests-"))]
    return folders, processes_under(tmp)


def _wait_for(marker, process):
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_session_that_ends_normally_leaves_no_cluster(private_tmp):
    process, _ = _child(private_tmp, wait=False)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output
    assert _clusters_left(private_tmp) == ([], [])


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_session_leaves_no_cluster(private_tmp, number):
    process, marker = _child(private_tmp, wait=True)
    _wait_for(marker, process)
    process.send_signal(number)
    # 300 s as above: on a loaded CI machine the child's teardown (stopping its cluster) once took over 120 s.
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode != 0, output
    assert _clusters_left(private_tmp) == ([], []), output


def test_the_next_session_sweeps_what_a_killed_session_left(private_tmp):
    process, marker = _child(private_tmp, wait=True)
    _wait_for(marker, process)
    process.kill()
    process.communicate(timeout=60)
    folders, servers = _clusters_left(private_tmp)
    assert folders and servers  # SIGKILL: nothing could run
    sweep = subprocess.run(  # nosec B603 - a session that only collects: its conftest sweeps
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--co", "--rootdir", str(private_tmp / "child"), str(private_tmp / "child")],
        cwd=REPO, env=dict(os.environ, TMPDIR=str(private_tmp), PYTHONPATH=str(REPO)),
        capture_output=True, timeout=300)
    assert sweep.returncode in (0, 5), sweep.stdout.decode()
    assert _clusters_left(private_tmp) == ([], [])
