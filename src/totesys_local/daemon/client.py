"""`totesys run|retry` as a thin client of the state folder's local emulator. Standard library only.

``run`` connects to the emulator's socket (starting the emulator when none answers), sends the command
line, the working folder, the environment and the code fingerprint, prints the output as it arrives
and returns the run's exit status. ``stop`` stops the emulator (``totesys stop``, ``make stop``).
"""
import contextlib
import enum
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Final, List, Mapping, Optional, Sequence, Union

from totesys_local.daemon.protocol import (LOG_NAME, PID_NAME, SWITCH_VARIABLE, DaemonError, code_fingerprint,
                                           describe_seconds, idle_seconds, receive, send, socket_path,
                                           state_folder)

START_TIMEOUT = 180  # the emulator imports everything and warms moto up (~5 s; more on a busy machine)
STOP_TIMEOUT = 120  # a stopping emulator first finishes the run it serves


class _Restart(enum.Enum):
    """The emulator answered that it is stopping (its code is older): ask again."""
    RESTART = "restart"


RESTART: Final = _Restart.RESTART


def enabled(environ: Optional[Mapping[str, str]] = None) -> bool:
    """False when TOTESYS_DAEMON is off (0, no, false): run in-process, as before the emulator."""
    value = (os.environ if environ is None else environ).get(SWITCH_VARIABLE, "on")
    return value.strip().lower() not in ("off", "0", "no", "false")


def can_serve() -> bool:
    """Whether an emulator could start here: it needs moto, a development dependency. Without it the
    command runs in-process, which says what to install."""
    import importlib.util
    return importlib.util.find_spec("moto") is not None


def run(argv: Sequence[str], command: str, state_dir: Union[str, Path]) -> Optional[int]:
    """Run ``totesys <argv>`` in the emulator of ``state_dir``; return its exit status (1 with one line
    on stderr when the emulator cannot be reached), or None when no emulator can serve here."""
    try:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        path = socket_path(state_dir)
        request = {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ),
                   "fingerprint": code_fingerprint()}
        for _ in range(3):
            conn = _connect(path)
            if conn is None:
                if not can_serve():
                    return None
                pid = start(state_dir)
                print(f"local emulator started, pid {pid}; it stops after "
                      f"{describe_seconds(idle_seconds())} idle or with `make stop`", file=sys.stderr,
                      flush=True)
                conn = _connect(path)
                if conn is None:
                    raise DaemonError(f"the local emulator (pid {pid}) started but does not answer on {path}")
            outcome = _exchange(conn, request, command, state_dir)
            if outcome is not RESTART:
                return outcome
        raise DaemonError("the local emulator kept stopping as it was asked to run; see "
                          f"{Path(state_dir) / LOG_NAME}, or set {SWITCH_VARIABLE}=off")
    except DaemonError as err:
        print(f"totesys {command}: FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("totesys: interrupted (the local emulator finishes the execution and saves it; "
              "`totesys pending` shows what waits)", file=sys.stderr)
        return 130


def _connect(path: Path) -> Optional[socket.socket]:
    """A connection to the emulator listening on ``path``, or None when none listens there."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None
    except OSError as err:
        conn.close()
        raise DaemonError(f"cannot reach the local emulator at {path}: {err}") from None
    return conn


def _exchange(conn: socket.socket, request: Mapping[str, object], command: str,
              state_dir: Union[str, Path]) -> Union[int, _Restart]:
    """Send the request and relay the answers; the exit status, or RESTART."""
    log = Path(state_dir) / LOG_NAME
    with conn, conn.makefile("rb") as stream:
        try:
            greeting = receive(stream)
        except ConnectionResetError:
            greeting = None
        if greeting is None:  # it was stopping as we connected (idle, a restart, `totesys stop`)
            return RESTART
        pid = greeting["pid"]
        try:
            send(conn, **request)
            while True:
                message = receive(stream)
                if message is None:
                    break
                if "out" in message or "err" in message:
                    if not _relay(message):
                        print(f"totesys {command}: output closed; the local emulator finishes the run and "
                              "saves it", file=sys.stderr)
                        return 1
                elif "exit" in message:
                    return message["exit"]
                elif "restart" in message:
                    return RESTART
                elif "busy" in message:
                    print(f"totesys {command}: FAILED: another totesys run is using {state_dir}; "
                          "wait for it to finish", file=sys.stderr)
                    return 1
        except (ConnectionResetError, BrokenPipeError):
            pass
    raise DaemonError(f"the local emulator (pid {pid}) stopped before the run finished (its log: "
                      f"{log}); whatever the execution saved is kept: run again to go on")


def _relay(message: Mapping[str, Any]) -> bool:
    """Print an output message where it belongs; False when our own output is closed (`| head`)."""
    stream = sys.stdout if "out" in message else sys.stderr
    try:
        stream.write(message.get("out", message.get("err")))
        stream.flush()
    except BrokenPipeError:
        return False
    return True


def start(state_dir: Union[str, Path]) -> int:
    """Start the emulator of ``state_dir`` (detached: its own session, output in daemon.log) and wait
    until it serves; return its pid."""
    import subprocess  # nosec B404 - starts this project's own emulator with this interpreter
    state = state_folder(state_dir)
    command = [sys.executable, "-m", "totesys_local.daemon", "--state-dir", str(state)]
    starter = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,  # nosec B603
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = starter.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        starter.kill()
        starter.wait()
        raise DaemonError(f"the local emulator did not start within {START_TIMEOUT} s (its log: "
                          f"{state / LOG_NAME})") from None
    lines = output.decode(errors="replace").strip().splitlines()
    answer = lines[-1] if lines else ""
    if starter.returncode == 0 and answer.startswith("ready "):
        return int(answer.split()[1])
    raise DaemonError(f"could not start the local emulator: {answer or 'no answer'} (its log: "
                      f"{state / LOG_NAME}); {SWITCH_VARIABLE}=off runs without it")


def running_pid(state_dir: Union[str, Path]) -> Optional[int]:
    """The pid of the emulator of ``state_dir`` if it is running, else None."""
    try:
        pid = int((Path(state_dir) / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_our_emulator(pid, state_dir) else None


def is_our_emulator(pid: int, state_dir: Union[str, Path]) -> bool:
    """Whether process ``pid`` is the emulator of ``state_dir`` (not a recycled pid; not a zombie):
    its command line, where /proc shows it; else its own answer on the socket."""
    if os.path.exists("/proc/self/cmdline"):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"totesys_local.daemon" in arguments and os.fsencode(state_folder(state_dir)) in arguments
    return _ping(state_dir) == pid  # pragma: no cover - systems without /proc


def _ping(state_dir: Union[str, Path]) -> Optional[int]:  # pragma: no cover - systems without /proc
    conn = _connect(socket_path(state_dir))
    if conn is None:
        return None
    with conn, conn.makefile("rb") as stream:
        greeting = receive(stream)
        send(conn, ping=True)
    return greeting.get("pid") if greeting else None


def emulator_pids(state_dir: Union[str, Path]) -> List[int]:
    """The pids of every emulator of ``state_dir``: the one its pid file names, and any other started
    for the same path (one whose folder was deleted and made again, whose pid file is gone), found by
    their command lines where /proc shows them."""
    pids = [pid for pid in (running_pid(state_dir),) if pid is not None]
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if entry.name.isdigit() and int(entry.name) not in pids and int(entry.name) != os.getpid() \
                    and is_our_emulator(int(entry.name), state_dir):
                pids.append(int(entry.name))
    return pids


def stop(state_dir: Union[str, Path], timeout: float = STOP_TIMEOUT) -> Optional[int]:
    """Stop every emulator of ``state_dir`` (``emulator_pids``): SIGTERM (each finishes the run it
    serves, then exits), SIGKILL after ``timeout`` s (the state folder is safe either way). Return the
    pid the pid file named (else the first found), or None if none ran."""
    pids = emulator_pids(state_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while is_our_emulator(pid, state_dir):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    return pids[0] if pids else None
