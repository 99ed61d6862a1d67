"""How long the load may wait for a lock, and what to say when it waited (issue 19).

A load must never wait unboundedly on a reader, and a lock request it makes must never keep readers
queued for long: every transaction of the load bounds its lock waits here (``bound_lock_waits``). A lower
value the session already has (derived from the Lambda's remaining time, ``utils.db.connection``) is kept.
When a wait ends, ``lock_holders`` names the sessions holding locks on the tables concerned, for the line
that says what the load waited for.
"""
from typing import Iterable, List

from pg8000.native import Connection

from utils.db.connection import sqlstate
from utils.errors import ConcurrentRunError

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
# Any lock of a batch (none of them conflicts with a plain reader's ACCESS SHARE) waits at most this long.
LOCK_TIMEOUT_MS = 10_000


def is_lock_timeout(err: BaseException) -> bool:
    """True for a statement ended by lock_timeout (55P03)."""
    return sqlstate(err)[0] == LOCK_NOT_AVAILABLE


def is_lock_wait_ended(err: BaseException) -> bool:
    """True for a statement ended by lock_timeout (55P03) or by a local statement_timeout (57014)."""
    return sqlstate(err)[0] in (LOCK_NOT_AVAILABLE, QUERY_CANCELED)


def bound(conn: Connection, setting: str, milliseconds: int) -> int:
    """Set ``setting`` (lock_timeout or statement_timeout) for the rest of the transaction to
    ``milliseconds``, unless the session already has a lower non-zero value."""
    current = int(conn.run("SELECT setting FROM pg_settings WHERE name = :name", name=setting)[0][0])
    value = milliseconds if current == 0 else min(current, milliseconds)
    conn.run("SELECT set_config(:name, :value, true)", name=setting, value=f"{value}ms")
    return current


def bound_lock_waits(conn: Connection) -> None:
    """Inside a transaction: no lock it takes from now on waits longer than LOCK_TIMEOUT_MS."""
    bound(conn, "lock_timeout", LOCK_TIMEOUT_MS)


def lock_holders(conn: Connection, tables: Iterable[str]) -> List[str]:
    """['pid N (state, since T) holds MODE on TABLE', ...] (state preceded by the backend type when it is not
    a client's, e.g. "autovacuum worker"): other sessions' granted locks on ``tables``
    (names in the current schema), for the line that says what the load waited for."""
    rows = conn.run(
        "SELECT l.pid, concat_ws(', ', nullif(a.backend_type, 'client backend'), a.state), "
        "to_char(a.state_change, 'HH24:MI:SS'), l.mode, "
        "c.relname::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.granted AND l.pid <> pg_backend_pid() AND c.relname = ANY(:tables) "
        "AND c.relnamespace = current_schema()::regnamespace ORDER BY 1, 5", tables=list(tables))
    return [f"pid {pid} ({state}, since {since}) holds {mode} on {table}"
            for pid, state, since, mode, table in rows]


def lock_wait_error(conn: Connection, tables: Iterable[str], what: str) -> ConcurrentRunError:
    """The ConcurrentRunError for a batch whose lock wait ended (the transaction already rolled back)."""
    try:
        holders = lock_holders(conn, tables)
    except Exception:  # nosec B110 - the holders only enrich the message
        holders = []
    return ConcurrentRunError(
        f"{what}: waited {LOCK_TIMEOUT_MS / 1000:g} s for a lock another session holds "
        f"({'; '.join(holders) or 'no longer held'}); rolled back, the next run retries it")
