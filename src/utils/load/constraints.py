"""Foreign keys during a large load, and how long the load may wait for a lock (issues 11, 19, 24).

Each fact row checks 7-9 foreign keys; PostgreSQL checks them row by row (one RI trigger per row and
key), which was 70-85% of a large load. Validating each key once, set-wise, is far cheaper, but
re-validating the whole fact table on every batch made a backfill quadratic (issue 24), and dropping the
keys inside the batch's transaction held ACCESS EXCLUSIVE on the fact table and every dimension it
references for the whole batch, with no lock_timeout: one analyst idle in a transaction made the load
wait forever and every reader queue behind it (issue 19).

So the keys of a fact table are **suspended for a whole execution** (every round of a bounded backfill):

1. ``suspend_foreign_keys``: when the execution's pending rows for a fact table reach the thresholds
   (``use_setwise``), ONE short transaction takes the loads' advisory lock, then ACCESS EXCLUSIVE on the
   fact table and the dimensions it references in one ``LOCK TABLE`` that may wait at most
   ``EXCLUSIVE_WAIT_MS`` (``lock_timeout`` and ``statement_timeout`` set locally), records each key
   (name, ``pg_get_constraintdef`` text, whether it was validated) in ``etl_suspended_foreign_key``,
   drops the keys and commits: readers queue at most that long, plus the milliseconds of the drop. If
   the lock is not granted in ``EXCLUSIVE_ATTEMPTS`` tries, the keys stay and are checked row by row,
   with one WARNING line naming what the load waited for (the sessions holding locks on those tables).
2. While suspended, every batch checks its fact rows against the dimensions itself, inside its own
   transaction, before the append (``merge._park_dangling``: a dangling row is parked, never appended),
   so every committed fact row references a dimension row the warehouse holds; loads are serialised by
   the advisory lock and no load deletes a dimension row, so that stays true.
3. ``restore_foreign_keys``: at the end of the execution's last round (the load event without
   ``more_waiting``), each key is re-added ``NOT VALID`` (SHARE ROW EXCLUSIVE: blocks writers, not
   readers; instant; lock waits up to ``RESTORE_WAIT_MS``, past deadlock_timeout, so that an autovacuum
   worker in the way cancels itself) and then, each in its own transaction, ``VALIDATE CONSTRAINT``
   (SHARE UPDATE EXCLUSIVE on the fact table, ROW SHARE on the dimension: readers and the analysts'
   queries go on)
   checks the whole table once, set-wise; the fact tables' keys are validated on two connections at once
   (two server processes: two cores), each VALIDATE holding the loads' advisory lock in its shared mode.
   A key that was NOT VALID before is re-added NOT VALID and left so. Each step commits with its record,
   so a crash anywhere leaves records the next execution's end finishes; until then the batches keep
   parking dangling rows themselves (point 2).

Every other lock a batch takes (ROW EXCLUSIVE on the tables it writes, row locks on dimension rows it
updates) waits at most ``LOCK_TIMEOUT_MS`` (``bound_lock_waits``): a reader holding a conflicting lock
(``SELECT ... FOR UPDATE``, ``LOCK TABLE``) fails the batch with a ConcurrentRunError naming the sessions
holding locks, the batch rolled back and retried by the next run. A lower lock_timeout the session
already has (derived from the Lambda's remaining time) is kept.
"""
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pg8000.exceptions
from pg8000.native import identifier

from utils.db.connection import close_db_connection, end_quietly, sqlstate
from utils.errors import ForeignKeyViolationError
from utils.load.locks import bound, is_lock_wait_ended, lock_holders
from utils.load.schema import ADVISORY_LOCK_KEY, SUSPENDED_KEYS
from utils.logger import get_logger

# Below these, an execution keeps PostgreSQL's row-by-row checks (measured: docs/BENCHMARKS.md).
SETWISE_MIN_ROWS = 5_000
SETWISE_MIN_FRACTION = 0.15
FOREIGN_KEY_VIOLATION = "23503"
# A request for ACCESS EXCLUSIVE makes every later reader of the table queue behind it: it waits at most
# this long, and is tried this many times, this far apart, before the keys are left to row-by-row checks.
EXCLUSIVE_WAIT_MS = 500
EXCLUSIVE_ATTEMPTS = 3
EXCLUSIVE_RETRY_SECONDS = 1.0
# Re-adding (SHARE ROW EXCLUSIVE) and validating (SHARE UPDATE EXCLUSIVE) block no reader, even queued: they
# may wait longer, past deadlock_timeout (1 s), after which an autovacuum worker in the way cancels itself.
RESTORE_WAIT_MS = 10_000
# maintenance_work_mem of each VALIDATE CONSTRAINT's transaction (``_validate``).
VALIDATE_WORK_MEM = "256MB"

logger = get_logger("load")


def foreign_keys(conn: Any, table: str) -> List[Tuple[str, str, bool]]:
    """[(constraint name, definition, validated)] of ``table``'s foreign keys in the current schema, by
    name. The definition is PostgreSQL's own ``pg_get_constraintdef`` text (deferrability and NOT VALID
    included): re-created from it, the constraint is what it was."""
    rows = conn.run(
        "SELECT con.conname, pg_get_constraintdef(con.oid), con.convalidated FROM pg_constraint con "
        "JOIN pg_class c ON c.oid = con.conrelid "
        "WHERE con.contype = 'f' AND c.relname = :table AND c.relnamespace = current_schema()::regnamespace "
        "ORDER BY con.conname", table=table)
    return [(name, definition, bool(validated)) for name, definition, validated in rows]


def checked_at_once(conn: Any, table: str) -> bool:
    """True when ``table`` has foreign keys and every one checks a new row before the statement ends:
    validated (not NOT VALID: a key being restored is) and not INITIALLY DEFERRED (checked only at
    COMMIT). False while its keys are suspended (there are none): the load checks the rows itself."""
    rows = conn.run(
        "SELECT coalesce(bool_and(con.convalidated AND NOT con.condeferred), false) FROM pg_constraint con "
        "JOIN pg_class c ON c.oid = con.conrelid "
        "WHERE con.contype = 'f' AND c.relname = :table AND c.relnamespace = current_schema()::regnamespace",
        table=table)
    return bool(rows[0][0])


def is_foreign_key_violation(err: BaseException) -> bool:
    """True for ForeignKeyViolationError and for PostgreSQL's foreign_key_violation (23503)."""
    return isinstance(err, ForeignKeyViolationError) or sqlstate(err)[0] == FOREIGN_KEY_VIOLATION


def may_alter(conn: Any, table: str) -> bool:
    """True when the session may drop and re-create ``table``'s foreign keys: it has its owner's
    privileges and the REFERENCES privilege on every table they reference."""
    rows = conn.run(
        "SELECT pg_has_role(c.relowner, 'USAGE') AND coalesce(bool_and("
        "has_table_privilege(con.confrelid, 'REFERENCES')), true) "
        "FROM pg_class c LEFT JOIN pg_constraint con ON con.conrelid = c.oid AND con.contype = 'f' "
        "WHERE c.relname = :table AND c.relnamespace = current_schema()::regnamespace "
        "GROUP BY c.relowner", table=table)
    return bool(rows and rows[0][0])


def use_setwise(conn: Any, table: str, rows: int) -> bool:
    """True when appending ``rows`` rows to ``table`` should validate its foreign keys set-wise."""
    if rows < SETWISE_MIN_ROWS:
        return False
    existing = conn.run("SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                        "WHERE relname = :table AND relnamespace = current_schema()::regnamespace",
                        table=table)
    return rows >= SETWISE_MIN_FRACTION * (existing[0][0] if existing else 0)


def suspended_tables(conn: Any) -> Set[str]:
    """The fact tables whose foreign keys are suspended (recorded in etl_suspended_foreign_key)."""
    sql = f"SELECT DISTINCT table_name FROM {identifier(SUSPENDED_KEYS)}"  # nosec B608
    return {row[0] for row in conn.run(sql)}


def _referenced(conn: Any, table: str) -> List[str]:
    """The tables ``table``'s foreign keys reference, by name."""
    return [row[0] for row in conn.run(
        "SELECT DISTINCT r.relname::text FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
        "JOIN pg_class r ON r.oid = con.confrelid WHERE con.contype = 'f' AND c.relname = :table "
        "AND c.relnamespace = current_schema()::regnamespace ORDER BY 1", table=table)]


def _suspend_once(conn: Any, table: str) -> Optional[bool]:
    """One attempt of ``suspend_foreign_keys``; True when the keys were suspended, None when the table
    has none, False when the lock was not granted in time."""
    conn.run("START TRANSACTION")
    try:
        conn.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
        keys = foreign_keys(conn, table)
        if not keys:
            conn.run("ROLLBACK")
            return None
        tables = [table] + [name for name in _referenced(conn, table) if name != table]
        statement = bound(conn, "statement_timeout", EXCLUSIVE_WAIT_MS)
        bound(conn, "lock_timeout", EXCLUSIVE_WAIT_MS)
        conn.run(f"LOCK TABLE {', '.join(identifier(name) for name in tables)} IN ACCESS EXCLUSIVE MODE")
        conn.run("SELECT set_config('statement_timeout', :value, true)", value=f"{statement}ms")
        conn.run(f"INSERT INTO {identifier(SUSPENDED_KEYS)} "  # nosec B608
                 "(table_name, constraint_name, definition, was_validated, column_name, referenced_table, "
                 "referenced_column) "
                 "SELECT c.relname, con.conname, pg_get_constraintdef(con.oid), con.convalidated, "
                 "CASE WHEN cardinality(con.conkey) = 1 THEN a.attname END, r.relname, "
                 "CASE WHEN cardinality(con.conkey) = 1 THEN f.attname END FROM pg_constraint con "
                 "JOIN pg_class c ON c.oid = con.conrelid JOIN pg_class r ON r.oid = con.confrelid "
                 "JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1] "
                 "JOIN pg_attribute f ON f.attrelid = con.confrelid AND f.attnum = con.confkey[1] "
                 "WHERE con.contype = 'f' AND c.relname = :table "
                 "AND c.relnamespace = current_schema()::regnamespace", table=table)
        for name, _, _ in keys:
            conn.run(f"ALTER TABLE {identifier(table)} DROP CONSTRAINT {identifier(name)}")
        conn.run("COMMIT")
        return True
    except pg8000.exceptions.DatabaseError as err:
        end_quietly(conn)
        if is_lock_wait_ended(err):
            return False
        raise
    except BaseException:
        end_quietly(conn)
        raise


def suspend_foreign_keys(conn: Any, table: str) -> bool:
    """Drop ``table``'s foreign keys until ``restore_foreign_keys`` (outside any transaction; see the
    module docstring). Returns True when they were suspended; False (keys kept, row-by-row checks, one
    WARNING naming what it waited for) when ACCESS EXCLUSIVE was not granted in time."""
    for attempt in range(EXCLUSIVE_ATTEMPTS):
        if attempt:
            time.sleep(EXCLUSIVE_RETRY_SECONDS)
        started = time.perf_counter()
        suspended = _suspend_once(conn, table)
        if suspended is None:
            return False
        if suspended:
            logger.info("foreign keys suspended for this execution: validated set-wise at its end",
                        table=table, lock_seconds=round(time.perf_counter() - started, 3))
            return True
    tables = [table] + _referenced(conn, table)
    logger.warning(
        f"foreign keys checked row by row: waited {EXCLUSIVE_ATTEMPTS} x {EXCLUSIVE_WAIT_MS} ms for ACCESS "
        f"EXCLUSIVE on {', '.join(tables)} to suspend them; other sessions hold locks there: "
        + ("; ".join(lock_holders(conn, tables)) or "none now"), table=table)
    return False


def suspend_for_execution(conn: Any, pending_rows: Dict[str, int]) -> Set[str]:
    """Suspend the keys of each fact table whose pending rows (``{table: rows}``) reach the thresholds,
    when the load user may; returns the fact tables suspended now or before."""
    suspended = suspended_tables(conn)
    for table, rows in sorted(pending_rows.items()):
        if table in suspended or not use_setwise(conn, table, rows):
            continue
        if not may_alter(conn, table):
            logger.info("foreign keys checked row by row: the load user does not own the table",
                        table=table, rows=rows)
        elif suspend_foreign_keys(conn, table):
            suspended.add(table)
    return suspended


def _in_transaction(conn: Any, body: Callable[[], Any], wait_ms: int = RESTORE_WAIT_MS,
                    shared: bool = False) -> bool:
    """Run ``body()`` in one transaction holding the loads' advisory lock (``shared``: its shared mode,
    which excludes the loads and lets other shared holders go on), lock waits bounded; True when it
    committed, False when a lock wait ended (rolled back)."""
    conn.run("START TRANSACTION")
    try:
        conn.run(f"SELECT pg_advisory_xact_lock{'_shared' if shared else ''}(:key)", key=ADVISORY_LOCK_KEY)
        bound(conn, "lock_timeout", wait_ms)
        body()
        conn.run("COMMIT")
        return True
    except pg8000.exceptions.DatabaseError as err:
        end_quietly(conn)
        if is_lock_wait_ended(err):
            return False
        raise
    except BaseException:
        end_quietly(conn)
        raise


def _records(conn: Any) -> List[List[Any]]:
    return conn.run(f"SELECT table_name, constraint_name, definition, was_validated, re_added "  # nosec B608
                    f"FROM {identifier(SUSPENDED_KEYS)} ORDER BY 1, 2")


def _re_add(conn: Any) -> None:
    """Re-add every suspended key not yet back, NOT VALID (instant, no scan)."""
    for table, name, definition, validated, re_added in _records(conn):
        if re_added:
            continue
        text = definition if definition.endswith(" NOT VALID") else f"{definition} NOT VALID"
        # definition is pg_get_constraintdef's text, recorded by suspend_foreign_keys
        conn.run(f"ALTER TABLE {identifier(table)} ADD CONSTRAINT {identifier(name)} {text}")  # nosec B608
        records = identifier(SUSPENDED_KEYS)
        done = (f"UPDATE {records} SET re_added = true" if validated  # nosec B608
                else f"DELETE FROM {records}")  # nosec B608
        conn.run(f"{done} WHERE table_name = :table AND constraint_name = :name",  # nosec B608
                 table=table, name=name)


def _validate(conn: Any, table: str, name: str, violations: List[ForeignKeyViolationError]) -> bool:
    """VALIDATE one re-added key and forget its record (one transaction). A dangling reference (which
    the batches' own checks should have made impossible) leaves the key NOT VALID (later batches then
    park dangling rows before appending) and is added to ``violations``."""
    def body() -> None:
        # VALIDATE's check (one anti-join over the whole fact table) runs with maintenance_work_mem as
        # its work_mem: the server's default (64 MB) split the hash of a large dimension (1.6M
        # transactions at x100) into batches on disk (issue 24, third pass).
        conn.run("SELECT set_config('maintenance_work_mem', :memory, true)", memory=VALIDATE_WORK_MEM)
        try:
            conn.run("SAVEPOINT validate_key")
            conn.run(f"ALTER TABLE {identifier(table)} VALIDATE CONSTRAINT {identifier(name)}")
        except pg8000.exceptions.DatabaseError as err:
            if not is_foreign_key_violation(err):
                raise
            conn.run("ROLLBACK TO SAVEPOINT validate_key")
            violations.append(ForeignKeyViolationError(table, name, sqlstate(err)[1].get("D", "")))
        conn.run(f"DELETE FROM {identifier(SUSPENDED_KEYS)} "  # nosec B608
                 "WHERE table_name = :table AND constraint_name = :name", table=table, name=name)
    # Shared: the validations of other fact tables may run beside it (``restore_foreign_keys``); no load.
    return _in_transaction(conn, body, shared=True)


def _validate_all(conn: Any, keys: List[Tuple[str, str]], violations: List[ForeignKeyViolationError]) -> int:
    """VALIDATE ``keys`` [(table, constraint)] on ``conn``, one after the other; the number validated."""
    validated = 0
    for table, name in keys:
        if _validate(conn, table, name, violations):
            validated += 1
        else:
            logger.warning("foreign key not validated yet: a lock was not granted in time; the next run "
                           "validates it", table=table, constraint=name)
    return validated


def _shares(conn: Any, keys: List[Tuple[str, str]]) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """``keys`` split in two by fact table (a table's keys in one share: two VALIDATEs of one table wait
    for each other's SHARE UPDATE EXCLUSIVE), the tables largest first each to the share with fewer
    bytes so far: the second share has the larger tables' remainder."""
    tables = sorted({table for table, _ in keys})
    sizes = dict(conn.run("SELECT t, pg_relation_size(to_regclass(t)) FROM unnest(CAST(:tables AS text[])) t",
                          tables=tables))
    shares: Tuple[List[Tuple[str, str]], List[Tuple[str, str]]] = ([], [])
    totals = [0, 0]
    for table in sorted(tables, key=lambda name: sizes.get(name) or 0, reverse=True):
        index = 0 if totals[0] <= totals[1] else 1
        totals[index] += sizes.get(table) or 0
        shares[index].extend(key for key in keys if key[0] == table)
    return shares


def _validate_apart(connect: Callable[[], Any], keys: List[Tuple[str, str]],
                    violations: List[ForeignKeyViolationError]) -> Optional[int]:
    """``_validate_all`` of ``keys`` on a connection of its own (``connect()``, closed after); None when it
    cannot be opened (the caller validates them itself)."""
    try:
        conn = connect()
    except Exception as err:  # noqa: BLE001 - any reason: the caller validates these keys itself
        logger.info("validating every key on one connection: a second one could not be opened",
                    error_type=type(err).__name__, error=str(err))
        return None
    try:
        return _validate_all(conn, keys, violations)
    finally:
        close_db_connection(conn)


def restore_foreign_keys(conn: Any, connect: Optional[Callable[[], Any]] = None) -> int:
    """Re-add and validate every suspended key (outside any transaction; see the module docstring).
    Returns the number of keys validated; a lock not granted in time leaves the rest recorded for the
    next execution's end, with a WARNING line. Raises ForeignKeyViolationError (after every key is
    back) when a key finds a dangling reference: that key is left NOT VALID.

    ``connect``: opens another connection to the warehouse, on which a thread validates the keys of some
    of the fact tables while ``conn`` validates the others (each VALIDATE is CPU-bound in its server
    process: two run on two cores; issue 24). Without it, or when it fails to connect, ``conn``
    validates them all."""
    if not _records(conn):
        return 0
    started = time.perf_counter()
    if not _in_transaction(conn, lambda: _re_add(conn)):
        logger.warning("suspended foreign keys not re-added yet: a lock was not granted in time; the next "
                       "run re-adds them (its batches check references themselves meanwhile)")
        return 0
    violations: List[ForeignKeyViolationError] = []
    keys = [(table, name) for table, name, _, _, _ in _records(conn)]
    mine, other = _shares(conn, keys) if connect is not None else (keys, [])
    apart: Optional[Future] = None
    # The pool's exit waits for the other share, whether this one returned or raised.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-validate") as pool:
        if connect is not None and other:
            apart = pool.submit(_validate_apart, connect, other, violations)
        validated = _validate_all(conn, mine, violations)
    done_apart = apart.result() if apart is not None else None  # its error, if any, raised here
    validated += _validate_all(conn, other, violations) if done_apart is None else done_apart
    logger.info("foreign keys restored and validated set-wise", constraints=validated,
                seconds=round(time.perf_counter() - started, 2), connections=1 if done_apart is None else 2)
    if violations:
        # the batches are committed (each exactly once); the key is left NOT VALID and the run fails loudly
        raise violations[0]
    return validated
