"""What the client and the local emulator share: the files in the state folder, the socket's path, the
code fingerprint and the messages. Standard library only: `totesys run` imports it on its fast path.

Messages are JSON objects, one per line, over a Unix stream socket. On each connection the emulator
first sends ``{"pid": N}``; the client sends one request ``{"argv", "cwd", "env", "fingerprint"}`` (or
``{"ping": true}``, answered by the greeting alone); the emulator answers with ``{"out": text}`` /
``{"err": text}`` (whole lines, as they are printed), then ``{"exit": status}``; or at once with
``{"restart": reason}`` (its code is older than the client's: it is stopping) or ``{"busy": true}``
(it is serving another run of this state folder).
"""
import hashlib
import json
import os
import stat
import socket
import sys
from pathlib import Path
from typing import IO, Any, Dict, Mapping, Optional, Union

from totesys_local.asl import ASL_TEMPLATE
from totesys_local.errors import LocalError

SOCKET_NAME, PID_NAME, LOG_NAME, LOCK_NAME = "daemon.sock", "daemon.pid", "daemon.log", "daemon.lock"
SWITCH_VARIABLE = "TOTESYS_DAEMON"
IDLE_VARIABLE = "TOTESYS_DAEMON_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 900.0
# sun_path holds 108 bytes on Linux and 104 on macOS, its terminating NUL included: stay under both.
MAX_SOCKET_PATH = 100
SRC = Path(__file__).resolve().parents[2]
# What the emulator reads when it imports its code: a change needs a fresh process.
# main-terraform: the emulated deploy renders the roles' policies and the timeouts from it.
CODE_FOLDERS = (SRC, SRC.parent / "sql", ASL_TEMPLATE.parent, SRC.parent / "main-terraform")
IMPORT_TIME_VARIABLES = ("PYTHON", "POWERTOOLS_", "MOTO_", "LOG_LEVEL")


class DaemonError(LocalError):
    """The local emulator could not be reached, started or stopped; the message is for the user."""


def state_folder(state_dir: Union[str, Path]) -> Path:
    """The absolute, symlink-free path of a state folder: one emulator per folder, however it is named."""
    return Path(os.path.realpath(state_dir))


def socket_path(state_dir: Union[str, Path]) -> Path:
    """``<state-dir>/daemon.sock``, or, when that path is too long for AF_UNIX, a socket in a private
    folder of the temporary directory named by a hash of the state folder's absolute path."""
    state = state_folder(state_dir)
    inside = state / SOCKET_NAME
    if len(os.fsencode(inside)) <= MAX_SOCKET_PATH:
        return inside
    key = hashlib.sha256(os.fsencode(state)).hexdigest()[:24]
    return private_temp_folder() / f"{key}.sock"


def private_temp_folder() -> Path:
    """``$TMPDIR/totesys-<uid>``, created mode 0700; refuses a folder another user could write to."""
    import tempfile
    folder = Path(tempfile.gettempdir()) / f"totesys-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise DaemonError(f"{folder} is not a folder of this user only (mode 700): remove it, or set "
                          f"{SWITCH_VARIABLE}=off")
    return folder


def idle_seconds(environ: Optional[Mapping[str, str]] = None) -> float:
    """Seconds without a request after which the emulator stops (TOTESYS_DAEMON_IDLE_SECONDS)."""
    text = (os.environ if environ is None else environ).get(IDLE_VARIABLE, "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_IDLE_SECONDS
    return value if value > 0 else DEFAULT_IDLE_SECONDS


def describe_seconds(seconds: float) -> str:
    """15 min, 90 s: how the started line says the idle time."""
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def code_fingerprint(environ: Optional[Mapping[str, str]] = None) -> str:
    """A digest of what the emulator's code is: the interpreter, the installed packages' folder(s), the
    path and CONTENT of every file of src/, sql/, state_machine/ and main-terraform/ (an edit that keeps a
    file's size and mtime is a change too), and the variables read at import time. About 0.7 MB read and
    hashed (a few ms): the client computes it on every run."""
    environ = os.environ if environ is None else environ
    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        digest.update("\0".join(str(part) for part in parts).encode("utf-8", "surrogateescape") + b"\n")

    # The interpreter by what it is, not by the name it was started by (venv/bin/python and the
    # console script's venv/bin/python3 are one interpreter), and the environment it runs in.
    add(os.path.realpath(sys.executable), sys.prefix, sys.version)
    for folder in sys.path:
        if folder.endswith("-packages") and os.path.isdir(folder):
            add(folder, os.stat(folder).st_mtime_ns)  # changes when a package is installed or removed
    for root in CODE_FOLDERS:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(name for name in dirnames if name not in ("__pycache__", ".terraform"))
            for name in sorted(filenames):
                if not name.endswith((".pyc", ".tmp")):
                    with open(os.path.join(dirpath, name), "rb") as code:
                        add(dirpath, name, hashlib.sha256(code.read()).hexdigest())
    for key in sorted(environ):
        if key.startswith(IMPORT_TIME_VARIABLES):
            add(key, environ[key])
    return digest.hexdigest()


def send(conn: socket.socket, **message: object) -> None:
    """Send one message (a JSON object on one line)."""
    conn.sendall((json.dumps(message) + "\n").encode())


def receive(stream: IO[bytes]) -> Optional[Dict[str, Any]]:
    """The next message from a socket's binary file object, or None at the end of the stream."""
    line = stream.readline()
    return json.loads(line) if line else None
