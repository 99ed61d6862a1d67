"""The logical replication slot CDC reads, through SQL functions on an ordinary connection.

The plugin is ``test_decoding`` (shipped with PostgreSQL and allowed on Amazon RDS): its text output is
read with ``pg_logical_slot_peek_changes`` (which never consumes anything) and the slot is moved with
``pg_replication_slot_advance`` once a batch is durable. LSNs travel as PostgreSQL's text (``'16/B374D848'``)
and are compared as integers (``lsn_int``).
"""
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Tuple

from utils.db.connection import sqlstate
from utils.errors import RetryableError, TotesysError

PLUGIN = "test_decoding"
# Creating a slot waits until every transaction running at that moment has ended (PostgreSQL's consistent
# point): at most this long (or the session's lower lock_timeout), then the run fails naming them.
SLOT_WAIT_MS = 30_000
# 55P03 lock_not_available (lock_timeout), 57014 query_canceled (statement_timeout).
WAIT_ENDED_STATES = ("55P03", "57014")
OPEN_TRANSACTIONS_SQL = (
    "SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), coalesce(state, ''), "
    "to_char(xact_start, 'YYYY-MM-DD HH24:MI:SS TZ') FROM pg_stat_activity "
    "WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
    "AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) ORDER BY xact_start LIMIT 10")
# The lower of SLOT_WAIT_MS and the session's lock_timeout (0: none), in milliseconds.
SLOT_WAIT_SQL = (
    "SELECT CASE WHEN setting::bigint = 0 THEN CAST(:wait AS bigint) "
    "ELSE least(setting::bigint, CAST(:wait AS bigint)) END FROM pg_settings WHERE name = 'lock_timeout'")
DEFAULT_SLOT_NAME = "totesys_cdc"
MESSAGE_PREFIX = "totesys-cdc"
# test_decoding's options: no xids in BEGIN/COMMIT lines, no empty transactions.
PEEK_OPTIONS = ("include-xids", "0", "skip-empty-xacts", "1")
# What a role needs besides wal_level = logical: the REPLICATION attribute (or superuser), or on Amazon RDS
# membership of rds_replication (RDS grants it through the rds.logical_replication parameter group).
PREREQUISITES_SQL = (
    "SELECT current_setting('wal_level'), "
    "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) "
    "OR coalesce((SELECT pg_has_role(current_user, oid, 'member') FROM pg_roles "
    "WHERE rolname = 'rds_replication'), false)")


class SlotWaitError(RetryableError):
    """Creating the slot waited longer than allowed for transactions open on the source (``open``: up to
    ten of them, as text naming pid, user, application, state and start); no slot is left behind. A later
    run may succeed once they end (retryable)."""

    def __init__(self, waited_ms: int, open_transactions: List[str]) -> None:
        named = "; ".join(open_transactions) or "none still open (they ended meanwhile)"
        super().__init__(f"CDC: creating the replication slot waited {waited_ms} ms for transactions open on "
                         f"the source to end (a slot's consistent point needs them finished): {named}. "
                         "End or commit them (pg_stat_activity) and run again")
        self.open_transactions = open_transactions


class CdcUnavailableError(TotesysError):
    """The source cannot serve logical decoding to this role: ``missing`` lists what to fix."""

    def __init__(self, missing: Iterable[str]) -> None:
        super().__init__("INGEST_MODE=cdc cannot run on this source: missing " + "; ".join(missing))
        self.missing = list(missing)


@dataclass(frozen=True)
class SlotInfo:
    """One row of ``pg_replication_slots``: ``wal_status`` is 'lost' once max_slot_wal_keep_size
    invalidated it; ``retained_bytes`` is the WAL kept for it (current LSN minus restart_lsn)."""
    name: str
    plugin: Optional[str]
    database: Optional[str]
    active: bool
    restart_lsn: Optional[str]
    confirmed_flush_lsn: Optional[str]
    wal_status: Optional[str]
    retained_bytes: Optional[int]

    @property
    def lost(self) -> bool:
        """The slot can no longer decode: invalidated (its WAL removed) or never reserved any."""
        return self.wal_status == "lost" or self.restart_lsn is None


def lsn_int(lsn: str) -> int:
    """The integer position of an LSN text 'X/Y'."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def check_prerequisites(conn: Any) -> None:
    """Raise CdcUnavailableError naming, in one line, everything missing: ``wal_level = logical``, the
    REPLICATION attribute (or rds_replication). The plugin is checked where the slot is created."""
    wal_level, may_replicate = conn.run(PREREQUISITES_SQL)[0]
    missing = []
    if wal_level != "logical":
        missing.append(f"wal_level = logical (it is {wal_level}; on RDS set rds.logical_replication = 1)")
    if not may_replicate:
        missing.append("the REPLICATION attribute for this role (ALTER ROLE ... REPLICATION; "
                       "on RDS: GRANT rds_replication TO the role)")
    if missing:
        raise CdcUnavailableError(missing)


def slot_info(conn: Any, name: str) -> Optional[SlotInfo]:
    """The SlotInfo of slot ``name``, or None when there is none."""
    rows = conn.run(
        "SELECT slot_name::text, plugin::text, database::text, active, restart_lsn::text, "
        "confirmed_flush_lsn::text, wal_status, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_name = :name", name=name)
    return SlotInfo(*rows[0]) if rows else None


def create_slot(conn: Any, name: str) -> str:
    """Create logical slot ``name`` (plugin test_decoding) in the connection's database; return its
    consistent point (LSN text): it decodes every transaction committing after it. Raises
    CdcUnavailableError when the server lacks the plugin, SlotWaitError (retryable, naming them) when
    transactions open on the source keep it waiting longer than SLOT_WAIT_MS or the session's lock_timeout
    (RELIABILITY defect 10)."""
    previous = conn.run("SELECT current_setting('lock_timeout')")[0][0]
    wait_ms = int(conn.run(SLOT_WAIT_SQL, wait=SLOT_WAIT_MS)[0][0])
    conn.run("SELECT set_config('lock_timeout', :value, false)", value=f"{wait_ms}ms")
    try:
        lsn: str = conn.run("SELECT lsn::text FROM pg_create_logical_replication_slot(:name, :plugin)",
                            name=name, plugin=PLUGIN)[0][0]
        return lsn
    except Exception as err:
        if PLUGIN in str(err) and "could not access file" in str(err):
            raise CdcUnavailableError([f"the logical decoding plugin {PLUGIN} on the server"]) from None
        if sqlstate(err)[0] in WAIT_ENDED_STATES:
            raise SlotWaitError(wait_ms, open_transactions(conn)) from None
        raise
    finally:
        conn.run("SELECT set_config('lock_timeout', :value, false)", value=previous)


def open_transactions(conn: Any) -> List[str]:
    """Up to ten transactions open on the server (other than this session's) holding an xid or a snapshot,
    oldest first, as text: pid, user, application, state, start."""
    return [f"pid {pid} ({user}{', ' + app if app else ''}; {state}; since {start})"
            for pid, user, app, state, start in conn.run(OPEN_TRANSACTIONS_SQL)]


def drop_slot(conn: Any, name: str) -> bool:
    """Drop slot ``name`` if it exists (and is not in use); return whether one was dropped."""
    return bool(conn.run(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :name",
        name=name))


def peek_changes(conn: Any, name: str, upto_lsn: str, max_rows: int = 0) -> List[Tuple[str, str]]:
    """``[(lsn, line)]`` of the transactions committed before ``upto_lsn`` that the slot has not been
    advanced past, in commit order; consumes nothing.

    ``max_rows`` (0: no limit) stops the decoding after the first transaction whose COMMIT brings the lines
    to that many or more (BEGIN and COMMIT lines count): whole transactions only, never half of one (the
    server checks the limit only between WAL records, and a transaction's lines come out at its commit).
    The LSN of a COMMIT line is the end of its commit record: advancing the slot there confirms that
    transaction and every one before it, nothing after."""
    rows: List[Tuple[str, str]] = conn.run(
        "SELECT lsn::text, data FROM pg_logical_slot_peek_changes(:name, CAST(:upto AS pg_lsn), "
        "CAST(:n AS integer), :o1, :v1, :o2, :v2)", name=name, upto=upto_lsn, n=max_rows or None,
        o1=PEEK_OPTIONS[0], v1=PEEK_OPTIONS[1], o2=PEEK_OPTIONS[2], v2=PEEK_OPTIONS[3])
    return rows


def advance_slot(conn: Any, name: str, lsn: str) -> None:
    """Move the slot's confirmed position to ``lsn`` (never back): WAL before it may be recycled."""
    conn.run("SELECT pg_replication_slot_advance(:name, CAST(:lsn AS pg_lsn))", name=name, lsn=lsn)


def flush_wal(conn: Any) -> str:
    """Flush the server's WAL up to now and return the flush position (LSN text): decoding reads no further
    than it. A one-message transaction committed with ``synchronous_commit = on`` flushes every record
    before its own, so every commit already visible (also an asynchronous one, whose record may still sit
    unflushed) is below the returned LSN. The message (prefix ``MESSAGE_PREFIX``) is no row change."""
    conn.run("START TRANSACTION")
    try:
        conn.run("SET LOCAL synchronous_commit = on")
        conn.run("SELECT pg_logical_emit_message(true, :prefix, '')", prefix=MESSAGE_PREFIX)
        conn.run("COMMIT")
    except BaseException:
        conn.run("ROLLBACK")
        raise
    flushed: str = conn.run("SELECT pg_current_wal_flush_lsn()::text")[0][0]
    return flushed
