"""A connection kept from one invocation to the next in the same process (issue 25).

A warm Lambda container runs its next invocation in the same process, and the local emulator runs every
invocation of a function in one process. A new backend pays for its first look at every table, index and
type it touches (catalog look-ups during parse, planning and executor start): the rollups' statement of an
incremental batch costs ~10 ms in a new backend against ~2.4 ms in one that has used the rollup tables
before (docs/BENCHMARKS.md, issue 25, fourth and fifth passes), on top of the connection's own start
(TCP, TLS, authentication). ``ConnectionKeeper.session`` hands out the connection the last invocation
left, when it is still the right one and still healthy, else a new one; at the end it keeps it for the
next invocation, or closes it. The rules:

- **keyed by what the connection was opened with**: host, port, database, user, a digest of the password,
  the TLS settings, the role and the time zone (``connection_key``). A rotated secret (new password, or
  the other user of an alternating rotation) gives a new key: the old session is closed, a new one opened;
- **checked before reuse**, in one round trip that also starts the invocation's session settings: the
  statement, lock and idle-in-transaction timeouts follow THIS invocation's remaining time
  (``utils.db.connection.session_timeouts``), as a new connection's would; the socket's read timeout
  too. A check that fails (server restarted, backend terminated, network gone; bounded by
  CHECK_TIMEOUT_SECONDS) or finds the server in recovery (a failed-over primary now a standby) drops the
  connection and a new one is opened, once: a failure to open it raises as any connect does;
- **never reused after an error**: any exception out of the invocation's work closes the connection
  (whatever its transaction state), and a connection given back inside a transaction is closed too;
- **nothing carried over**: a connection given back is reset with ``DISCARD ALL`` (session settings back
  to their start values, session advisory locks released, temporary tables, prepared statements and
  cached plans dropped); the backend's catalog caches, what makes it warm, survive that;
- **bounded**: a connection older than ``keep_seconds`` is closed rather than reused (role and database
  settings, ``ALTER ROLE ... SET``, reach only new sessions, and a DNS change only new connections);
  ``keep_seconds`` 0 turns keeping off;
- one kept connection per keeper; a second session while the first is out (another thread) gets a
  connection of its own, closed at its end unless none is kept by then; a forked child never uses its
  parent's (the socket is shared: it is forgotten, not closed).

Each batch is still its own transaction on that connection, with its ledger row (``utils.load.merge``):
keeping the session changes no transaction boundary.
"""
import atexit
import hashlib
import os
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterator, Mapping, Optional, Tuple

from pg8000.core import IDLE

from utils.config import tls_variables
from utils.db.connection import close_db_connection, session_timeouts
from utils.db.inline import run_inline

# The check before reuse waits at most this long for the server's answer (a peer gone without closing the
# connection would otherwise hold the invocation for the whole read timeout).
CHECK_TIMEOUT_SECONDS = 10

# Read through the module, so that a test can move the clock.
clock = time.monotonic


def connection_key(credentials: Mapping[str, Any], role: Optional[str], timezone: Optional[str]) -> Hashable:
    """What a connection was opened with, to tell whether a kept one may serve ``credentials``: every
    field but the password as it is, the password as a SHA-256 digest (not kept in clear beyond the
    connection), the role's TLS settings (``<ROLE>_SSLMODE``, ``<ROLE>_SSLROOTCERT``) and the time zone."""
    password = hashlib.sha256(str(credentials.get("password") or "").encode()).hexdigest()
    tls = tls_variables(role) if role else ("", None)
    return (str(credentials["host"]), int(credentials["port"]), str(credentials["database"]),
            str(credentials["user"]), password, role, tls, timezone)


@dataclass
class Session:
    """One invocation's connection: ``conn``; ``reused`` when it is the one an earlier invocation left;
    ``dropped``: why a kept connection was not reused (None when there was none, or it was)."""
    conn: Any
    reused: bool
    dropped: Optional[str] = None


@dataclass
class _Kept:
    conn: Any
    key: Hashable
    opened: float
    pid: int


class ConnectionKeeper:
    """Keeps at most one connection between sessions (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: Optional[_Kept] = None

    @contextmanager
    def session(self, key: Hashable, connect: Callable[[], Any], keep_seconds: float) -> Iterator[Session]:
        """A Session for ``key``: the kept connection when it passes the checks, else ``connect()``'s.
        At the end, kept for the next session (``keep_seconds`` > 0 and no error), else closed."""
        kept, dropped = self._take(key, keep_seconds)
        if kept is None:
            conn, opened = connect(), clock()
        else:
            conn, opened = kept.conn, kept.opened
        try:
            yield Session(conn, kept is not None, dropped)
        except BaseException:  # the session may be inside a failed transaction, or gone: never reused
            close_db_connection_quietly(conn)
            raise
        self._give_back(_Kept(conn, key, opened, os.getpid()), keep_seconds)

    def close(self) -> None:
        """Close the kept connection, if any (a forked child's inherited one is only forgotten)."""
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is not None:
            _discard(kept)

    @property
    def kept_backend(self) -> Optional[int]:
        """The server process id of the kept connection's backend (None when none is kept)."""
        kept = self._kept
        return None if kept is None else backend_pid(kept.conn)

    def _take(self, key: Hashable, keep_seconds: float) -> Tuple[Optional[_Kept], Optional[str]]:
        """(the kept connection, checked and set up for this invocation, or None; why it was dropped)."""
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is None:
            return None, None
        reason = _unusable(kept, key, keep_seconds)
        if reason is None:
            reason = _check(kept.conn)
        if reason is not None:
            _discard(kept)
            return None, reason
        return kept, None

    def _give_back(self, kept: _Kept, keep_seconds: float) -> None:
        if keep_seconds <= 0 or not _reset(kept.conn):
            close_db_connection_quietly(kept.conn)
            return
        with self._lock:
            keep = self._kept is None
            if keep:
                self._kept = kept
        if not keep:  # another session's connection was kept meanwhile
            close_db_connection_quietly(kept.conn)


def _unusable(kept: _Kept, key: Hashable, keep_seconds: float) -> Optional[str]:
    """Why ``kept`` may not serve ``key`` without even asking the server, or None."""
    if kept.pid != os.getpid():
        return "opened by another process (forked)"
    if keep_seconds <= 0:
        return "keeping connections is turned off"
    if kept.key != key:
        return "the credentials or connection settings changed"
    if clock() - kept.opened > keep_seconds:
        return f"older than {keep_seconds:g} s"
    return None


def _check(conn: Any) -> Optional[str]:
    """One round trip: is the session alive, on a primary, and set up with this invocation's timeouts
    (``session_timeouts``: statement_timeout, lock_timeout, idle_in_transaction_session_timeout, and the
    socket's read timeout)? None when it is ready, else why not."""
    if conn._transaction_status != IDLE:
        return "left inside a transaction"
    budget, idle, read_timeout = session_timeouts()
    settings = {"budget": f"{int(budget * 1000)}ms", "idle": f"{int(idle * 1000)}ms"}
    try:
        conn._usock.settimeout(min(CHECK_TIMEOUT_SECONDS, read_timeout))
        standby = run_inline(conn, "SELECT pg_is_in_recovery(), "
                             "set_config('statement_timeout', :budget, false), "
                             "set_config('lock_timeout', :budget, false), "
                             "set_config('idle_in_transaction_session_timeout', :idle, false)",
                             settings)[0][0]
        conn._usock.settimeout(read_timeout)
    except Exception as err:  # noqa: BLE001 - whatever the reason, the connection is not used again
        return f"the check before reuse failed ({type(err).__name__}: {err})"
    return "the server is in recovery (a standby)" if standby else None


def _reset(conn: Any) -> bool:
    """``DISCARD ALL`` on a connection given back; False when it is inside a transaction (pg8000's
    status is None until the first statement) or the reset fails."""
    if conn._transaction_status not in (None, IDLE):
        return False
    try:
        conn.run("DISCARD ALL")
    except Exception:  # noqa: BLE001 - not kept then
        return False
    return conn._transaction_status == IDLE


def _discard(kept: _Kept) -> None:
    """Close a kept connection; one inherited through fork is only forgotten: its socket is the
    parent's session too, so no Terminate is sent on it (the child's copy of the descriptor is closed)."""
    if kept.pid == os.getpid():
        close_db_connection_quietly(kept.conn)
        return
    try:
        kept.conn._usock.close()
    except Exception:  # nosec B110 - only the child's descriptor; nothing else to do
        pass


def backend_pid(conn: Any) -> int:
    """The server process id of ``conn``'s backend, from the key the server sent at the start (no round
    trip)."""
    pid: int = struct.unpack("!i", conn._backend_key_data[:4])[0]
    return pid


def close_db_connection_quietly(conn: Any) -> None:
    """Close ``conn``; any error (a socket already gone) is swallowed."""
    try:
        close_db_connection(conn)
    except Exception:  # nosec B110 - the connection is abandoned either way
        pass


_keepers: Dict[str, ConnectionKeeper] = {}
_keepers_lock = threading.Lock()


def keeper(name: str) -> ConnectionKeeper:
    """The process's keeper named ``name`` (e.g. ``"warehouse"``), made on first use."""
    with _keepers_lock:
        return _keepers.setdefault(name, ConnectionKeeper())


def close_kept_connections() -> None:
    """Close every kept connection of this process (at exit; tests between cases)."""
    with _keepers_lock:
        keepers = list(_keepers.values())
    for each in keepers:
        each.close()


atexit.register(close_kept_connections)
