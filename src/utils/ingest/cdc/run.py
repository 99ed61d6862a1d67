"""One CDC ingest run: the changes committed since the last batch, landed as the cursor mode lands rows.

``ingest_changes`` (called by ``utils.ingest.modes.run_ingest`` when INGEST_MODE=cdc):
1. take the ingest advisory lock, check the prerequisites (``slot.check_prerequisites``), read the state
   pointer; when there is no usable slot (first run, slot dropped or invalidated, a re-sync asked for),
   take a consistent full snapshot instead (``fallback``);
2. if the slot is behind the state pointer's ``cdc.lsn`` (the previous run died after committing its batch
   and before advancing), advance it there: those changes are landed already;
3. one statement fixes the run: batch time, the source's wall clock, zone and ``pg_current_snapshot()``;
   then ``upto`` = the WAL flush position after a synchronous one-message commit (``slot.flush_wal``:
   decoding reads no further than the flush, and every commit the snapshot sees is below it); check the
   source schema;
4. peek the slot's changes up to ``upto``, at most MAX_BATCH_ROWS lines in whole transactions (a bounded
   batch: it ends at the last COMMIT read, ``end``, and says ``more_waiting``), and fold them per key
   (``TableChanges``): the last version of each row, the keys inserted and deleted, a TRUNCATE;
5. land each table's rows as a Parquet file (``ParquetSink``: LANDING_SCHEMAS, the same checks as a COPY),
   the deleted keys that were landed before as the ``_deleted`` object (unless the mass-delete guard holds
   them: ``utils.ingest.delete_guard``), the changed key sets;
6. write the manifest, then the state pointer (CAS) with ``cdc.lsn = end``, and only THEN advance the slot
   to ``end``; emit ``CdcRetainedWalBytes``.

The state's per-table ``high``/``snapshot``/``keys`` stay valid for the cursor mode: every transaction below
the run's xmin committed (and was flushed) before ``upto``, so after a whole batch its rows are landed, and
the key sets are the previous ones plus inserts minus deletes. A bounded batch stops before ``upto``: it
keeps the previous bounds (and zone and clock), which its changes only add to, and updates the key sets.
Switching back to INGEST_MODE=cursor continues from them.
"""
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union, cast

import numpy as np
import pyarrow as pa
from pg8000.native import identifier

from utils.aws.layout import INGEST_MANIFESTS
from utils.aws.objects import write_to_s3
from utils.aws.state import read_ingest_state, write_ingest_state
from utils.config import Settings
from utils.contracts import IngestState
from utils.catalog.source import LANDING_SCHEMAS, PRIMARY_KEYS, SOURCE_TABLES
from utils.catalog.source_schema import check_source_schema
from utils.db.connection import end_quietly
from utils.errors import ConcurrentRunError, DateFormatError
from utils.format_time import format_time, parse_time
from utils.generate_file_key import generate_file_key
from utils.ingest.cdc.decode import Change, CdcDecodeError, Truncate, parse_line
from utils.ingest.cdc.fallback import continue_snapshot, snapshot_in_progress, snapshot_reason, take_snapshot
from utils.ingest.cdc.metric import emit_retained_wal
from utils.ingest.cdc.repoint import release_previous_slot, repoint_reason
from utils.ingest.cdc.slot import (SlotInfo, advance_slot, check_prerequisites, flush_wal, lsn_int,
                                   peek_changes, slot_info)
from utils.ingest.delete_guard import hold, still_held
from utils.ingest.deletes import read_keys, read_previous_keys, write_deleted, write_key_set
from utils.ingest.repair import RepairOptions
from utils.ingest.run import ADVISORY_LOCK_KEY, STAGE
from utils.ingest.sink import ParquetSink
from utils.ingest.snapshot import LEGACY_TIMEZONE, WINDOW_SQL, _prev_tables_in_zone, snapshot_bounds
from utils.ingest.zones import Clock, TableWindow, table_windows
from utils.ingest.source_identity import with_source_identity
from utils.logger import get_logger

CDC_STATE = "cdc"
# Threads writing one batch's objects to S3 (and reading the previous key sets) at the same time.
S3_THREADS = 8

logger = get_logger(STAGE)

Row = Dict[str, Optional[str]]


@dataclass
class TableChanges:
    """One table's changes in a batch, folded per key: ``rows`` {key: (row, lsn)} the last version of each
    row still there, ``inserted`` and ``deleted`` the keys whose last change inserted or deleted them;
    ``truncated``: a TRUNCATE emptied the table in the batch (``inserted`` and ``deleted`` then count from
    it: the keys held before it are all gone, except those inserted again after it)."""
    rows: Dict[int, Tuple[Row, str]] = field(default_factory=dict)
    inserted: Set[int] = field(default_factory=set)
    deleted: Set[int] = field(default_factory=set)
    truncated: bool = False

    def apply(self, change: Change) -> None:
        """Fold one row change in (commit order)."""
        if change.old_key is not None:
            self._delete(change.old_key)
        if change.kind == "DELETE":
            self._delete(change.key)
            return
        self.rows[change.key] = (cast(Row, change.row), change.lsn)
        self.deleted.discard(change.key)
        if change.kind == "INSERT" or change.old_key is not None:
            self.inserted.add(change.key)

    def truncate(self) -> None:
        """Fold a TRUNCATE in: nothing before it is left."""
        self.rows.clear()
        self.inserted.clear()
        self.deleted.clear()
        self.truncated = True

    def _delete(self, key: int) -> None:
        self.rows.pop(key, None)
        self.inserted.discard(key)
        self.deleted.add(key)


def fold_changes(lines: Iterable[Tuple[str, str]], schema: str) -> Dict[str, TableChanges]:
    """{table: TableChanges} of the peeked ``[(lsn, line)]`` (CdcDecodeError for a line it cannot read)."""
    tables: Dict[str, TableChanges] = {}
    for lsn, line in lines:
        change: Union[Change, Truncate, None] = parse_line(lsn, line, schema)
        if isinstance(change, Truncate):
            for table in change.tables:
                tables.setdefault(table, TableChanges()).truncate()
        elif change is not None:
            tables.setdefault(change.table, TableChanges()).apply(change)
    return tables


def batch_end(lines: Sequence[Tuple[str, str]], upto: str, max_rows: int) -> Tuple[int, str, bool]:
    """(how many of the peeked ``lines`` the batch takes, the LSN the slot is advanced to, more waiting) of a
    peek up to ``upto`` limited to ``max_rows`` (0: none; ``slot.peek_changes``). A peek that reached the
    limit ends at its last COMMIT line: the batch is cut there and more changes may wait (an exact fit says
    so too: the next run finds nothing). Raises CdcDecodeError when a limited peek holds no COMMIT."""
    if not max_rows or len(lines) < max_rows:
        return len(lines), upto, False
    for position in range(len(lines) - 1, -1, -1):
        if lines[position][1].startswith("COMMIT"):
            return position + 1, lines[position][0], True
    raise CdcDecodeError(None, None, lines[-1][0], "a bounded peek that ends in no COMMIT")


def _has_commit(lines: Sequence[Tuple[str, str]]) -> bool:
    return any(line.startswith("COMMIT") for _, line in lines)


def peek_batch(conn: Any, name: str, upto: str, max_rows: int) -> Tuple[List[Tuple[str, str]], int]:
    """(lines, the limit they were peeked with) of the next batch: ``slot.peek_changes`` limited to
    ``max_rows``, and peeked again with twice the limit while a peek that reached its limit holds no COMMIT
    (RELIABILITY defect 11: test_decoding writes each run's flush marker, a transaction of one message, as a
    ``message:`` line with no BEGIN or COMMIT; markers alone can fill a limit, and a batch is cut only at a
    COMMIT). Ends with a peek holding a COMMIT or fewer lines than its limit (everything up to ``upto``)."""
    limit = max_rows
    lines = peek_changes(conn, name, upto, limit)
    while limit and len(lines) >= limit and not _has_commit(lines):
        limit *= 2
        lines = peek_changes(conn, name, upto, limit)
    return lines, limit


def ingest_changes(conn: Any, s3_client: Any, settings: Settings, tables: Sequence[str],
                   repair: RepairOptions, helpers: Sequence[Any] = (),
                   repoint_source: bool = False) -> Dict[str, str]:
    """Run one CDC ingest (module docstring); return ``{table: file_key}`` of the tables that landed rows.
    A re-point (``repoint_source``) drops the previous source's slot when it is in the way
    (``utils.ingest.cdc.repoint``).

    CDC reads every table (the slot carries them all): ``tables`` other than all eleven are ignored with a
    WARNING. Raises CdcUnavailableError (prerequisites, one line), CdcDecodeError (table, column, LSN),
    ConcurrentRunError, StateConflictError, SchemaDriftError, SourceDataError; none advances the slot.
    """
    if list(tables) != list(SOURCE_TABLES):
        logger.warning("INGEST_MODE=cdc reads every table: tables_to_query ignored", tables=list(tables))
    bucket, name = settings.ingest_bucket, settings.cdc_slot_name
    if not conn.run("SELECT pg_try_advisory_lock(:key)", key=ADVISORY_LOCK_KEY)[0][0]:
        raise ConcurrentRunError("another ingest run holds the lock on the source database; try later")
    try:
        check_prerequisites(conn)
        state, etag = read_ingest_state(s3_client, bucket)
        previous = state
        state = with_source_identity(conn, state, repoint_source)
        slot = slot_info(conn, name)
        if repoint_source:
            slot = release_previous_slot(conn, previous, state, slot, name)
        reason = snapshot_reason(conn, state, slot, name, repair)
        if repoint_source:
            reason = repoint_reason(previous, state) or reason
        if reason is not None:
            result = take_snapshot(conn, s3_client, settings, repair, helpers, reason, repoint_source)
        elif snapshot_in_progress(state):
            result = continue_snapshot(conn, s3_client, settings, state, repair, helpers, repoint_source)
        else:
            result = land_changes(conn, s3_client, bucket, state, etag, cast(SlotInfo, slot), settings,
                                  repair)
        slot = slot_info(conn, name)
        if slot is not None and slot.retained_bytes is not None:
            emit_retained_wal(slot.retained_bytes)
        return result
    finally:
        end_quietly(conn, "SELECT pg_advisory_unlock(:key)", key=ADVISORY_LOCK_KEY)


@dataclass(frozen=True)
class Landed:
    """One table's objects of a batch: its manifest entry (None: no rows), the deleted keys recorded (None:
    no key set change), the new key-set object's key (None: unchanged) and the deletions held (0: none)."""
    entry: Optional[Dict[str, Any]]
    gone: Optional[np.ndarray]
    keys: Optional[str]
    held: int = 0
    table_rows: int = 0


def land_changes(conn: Any, s3_client: Any, bucket: str, state: Mapping[str, Any], etag: Optional[str],
                 slot: SlotInfo, settings: Settings,
                 repair: RepairOptions = RepairOptions()) -> Dict[str, str]:
    """Steps 2-6 of the module docstring; return ``{table: file_key}``."""
    name, landed_lsn = settings.cdc_slot_name, state[CDC_STATE]["lsn"]
    if lsn_int(cast(str, slot.confirmed_flush_lsn)) < lsn_int(landed_lsn):
        logger.info("slot behind the state pointer: advanced to it (the previous run stopped before "
                    "advancing it; its batch is landed)", slot=name, lsn=landed_lsn)
        advance_slot(conn, name, landed_lsn)
    batch_time, wall_now, zone, snapshot, dst_shift, schema = conn.run(
        WINDOW_SQL + ", current_schema()::text")[0]
    source_keys = _held_table_keys(conn, state)
    upto = flush_wal(conn)
    ignored = check_source_schema(conn, SOURCE_TABLES)
    lines, limit = peek_batch(conn, name, upto, settings.max_batch_rows)
    taken, end, more_waiting = batch_end(lines, upto, limit)
    changes = fold_changes(lines[:taken], schema)
    if more_waiting:
        logger.info("batch cut: more changes wait for the next batch", lsn=end, lines=taken,
                    max_batch_rows=settings.max_batch_rows)
        # The batch stops before ``upto``: an id the source lacks may be a deletion still to come (landing
        # it now would put its last changes after its deletion). The held ones wait for a whole batch.
        source_keys = {}
    prev_tables = _prev_tables_in_zone(conn, cast(IngestState, state), zone)
    # The cursor's rule (utils.ingest.zones): the bound covers every offset in play (a zone moved back
    # since the previous run: rows stamped in the old zone are ordinary rows, not future rows), and the
    # offsets recorded let a switch back to cursor mode start its window low enough.
    windows = _windows(conn, state, prev_tables, zone, snapshot, batch_time, wall_now, settings)
    highs = {table: windows[table].high for table in SOURCE_TABLES}
    ahead = timedelta(seconds=dst_shift + settings.ingest_future_tolerance_seconds)
    future_from = {table: format_time(highs[table] + ahead) for table in SOURCE_TABLES}
    held_future = state[CDC_STATE].get("future", {})
    if state[CDC_STATE].get("scan_future"):  # the first run after a snapshot
        held_future = _snapshot_future(conn, prev_tables)
    if not more_waiting:  # a bounded batch stops in the past: the rows it would re-read may change after it
        _release_future(conn, changes, held_future, future_from)
    bounds = {table: {"low": prev_tables[table]["high"], "high": format_time(highs[table]),
                      "snapshot": snapshot, "future_from": future_from[table]} for table in changes}

    def land(table: str) -> Tuple[str, Landed]:
        found = changes.get(table) or TableChanges()
        entry = _land_rows(s3_client, bucket, table, found, batch_time, bounds.get(table, {}))
        return table, replace(_changed_keys(s3_client, bucket, table, found, batch_time,
                                            prev_tables[table]["keys"], repair, source_keys.get(table)),
                              entry=entry)

    # Each table's S3 reads and writes are independent: one round trip for all of them, not one per object.
    with ThreadPoolExecutor(max_workers=S3_THREADS, thread_name_prefix="cdc-land") as pool:
        done = dict(pool.map(land, [table for table in SOURCE_TABLES
                                    if table in changes or table in source_keys]))
    landed = {table: found.entry for table, found in done.items() if found.entry}
    deleted = {table: found.gone for table, found in done.items()
               if found.gone is not None and found.gone.size}
    keys = {table: found.keys for table, found in done.items() if found.keys}
    held = {table: {"rows": found.held, "table_rows": found.table_rows}
            for table, found in done.items() if found.held}
    if more_waiting:
        for table, entry in still_held(state.get("held_deletes") or {}, repair.max_delete_fraction).items():
            held[table] = {"rows": entry["rows"] + held.get(table, {}).get("rows", 0),
                           "table_rows": entry["table_rows"]}
    new_state = dict(state, more_waiting=more_waiting, ignored_columns=ignored, held_deletes=held,
                     tables=_table_bounds(state["tables"] if more_waiting else prev_tables, keys,
                                          None if more_waiting else (highs, snapshot, future_from, batch_time,
                                                                     windows)),
                     **{CDC_STATE: _pointer(name, end, _future_held(changes, future_from, held_future))})
    if not more_waiting:
        new_state.update(timezone=zone, clock={"utc": format_time(batch_time), "wall": format_time(wall_now)})
    deleted_entry = write_deleted(s3_client, bucket, batch_time, deleted) if deleted else None
    if landed or deleted_entry:
        manifest_key = generate_file_key(INGEST_MANIFESTS, batch_time, "json")
        batch_id = f"{batch_time:%Y%m%dT%H%M%S%f}"
        manifest: Dict[str, Any] = {
            "batch_id": batch_id, "batch_time": format_time(batch_time), "timezone": zone,
            "ignored_columns": ignored, "prev_manifest_key": state.get("manifest_key"), "tables": landed}
        if deleted_entry:
            manifest["deleted"] = deleted_entry
        write_to_s3(s3_client, bucket, manifest_key, json.dumps(manifest, sort_keys=True))
        logger.info("manifest written", key=manifest_key, tables=len(landed))
        new_state.update(manifest_key=manifest_key, batch_id=batch_id)
    write_ingest_state(s3_client, bucket, cast(IngestState, new_state), etag)
    logger.info("state advanced", batch_time=format_time(batch_time), lsn=end, mode="cdc",
                more_waiting=more_waiting)
    advance_slot(conn, name, end)
    logger.info("slot advanced", slot=name, lsn=end,
                changes=sum(len(found.rows) + len(found.deleted) for found in changes.values()))
    return {table: entry["key"] for table, entry in landed.items()}


def _table_bounds(prev_tables: Mapping[str, Dict[str, Any]], keys: Mapping[str, str],
                  whole: Optional[Tuple[Mapping[str, datetime], str, Mapping[str, str], datetime,
                                        Mapping[str, TableWindow]]]) -> Dict[str, Dict[str, Any]]:
    """The state's ``tables`` after a batch: each table's key set (``keys``: the changed ones) and the rest
    of its entry in ``prev_tables``. After a bounded batch (``whole`` None) that is all (``prev_tables``: the
    entries as the state held them, its zone kept too); after a ``whole`` batch (its highs, snapshot,
    future_from, batch time and windows) the cursor's bounds are kept current (switching back to cursor
    mode reads from them), with this run's UTC time and the source clock's offsets, as a cursor run records
    them (``utils.ingest.zones``)."""
    if whole is None:
        return {table: dict(prev_tables[table], keys=keys.get(table, prev_tables[table]["keys"]))
                for table in SOURCE_TABLES}
    highs, snapshot, future_from, batch_time, windows = whole
    return {table: dict(prev_tables[table], high=format_time(highs[table]), snapshot=snapshot,
                        future_from=future_from[table], keys=keys.get(table, prev_tables[table]["keys"]),
                        utc=format_time(batch_time), offsets=sorted(windows[table].offsets))
            for table in SOURCE_TABLES}


def _pointer(name: str, lsn: str, future: Mapping[str, Dict[str, str]]) -> Dict[str, Any]:
    """The state's ``cdc`` entry: the slot, the LSN landed, and the future rows held (when any)."""
    return {"slot": name, "lsn": lsn, **({"future": future} if future else {})}


def _stamp(text: Optional[str]) -> Optional[datetime]:
    """A landed row's ``last_updated`` text as a datetime; None when it is none (NULL, 'infinity': the
    transform quarantines those for their own reason)."""
    try:
        return parse_time(cast(str, text))
    except (DateFormatError, TypeError):
        return None


def _future_held(changes: Mapping[str, TableChanges], future_from: Mapping[str, str],
                 previous: Mapping[str, Mapping[str, str]]) -> Dict[str, Dict[str, str]]:
    """{table: {key: last_updated}} of the rows this batch lands as future rows (stamped at or after the
    table's ``future_from``: the transform quarantines them), with those held before and not changed or
    deleted since (docs/RELIABILITY.md, defect 7); a table truncated in the batch holds none from before."""
    held = {table: dict(rows) for table, rows in previous.items()}
    for table, found in changes.items():
        bound = parse_time(future_from[table])
        rows = held.setdefault(table, {})
        if found.truncated:
            rows.clear()
        for key in found.deleted:
            rows.pop(str(key), None)
        for key, (row, _) in found.rows.items():
            stamp = _stamp(row.get("last_updated"))
            if stamp is not None and stamp >= bound:
                rows[str(key)] = cast(str, row["last_updated"])
            else:
                rows.pop(str(key), None)
    return {table: rows for table, rows in held.items() if rows}


def _snapshot_future(conn: Any, prev_tables: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, str]]:
    """{table: {key: last_updated}} of the source rows at or after each table's ``future_from`` of the
    snapshot before (which landed them as future rows, for quarantine): the future rows to re-read once
    the bound passes them. One scan of each table, once after each snapshot."""
    held = {}
    for table in SOURCE_TABLES:
        future_from = prev_tables.get(table, {}).get("future_from")
        if not future_from:
            continue
        key = identifier(PRIMARY_KEYS[table])
        rows = conn.run(f"SELECT {key}, CAST(last_updated AS text) FROM {identifier(table)} "  # nosec B608
                        "WHERE last_updated >= CAST(:bound AS timestamp)", bound=future_from)
        if rows:
            held[table] = {str(row[0]): row[1] for row in rows}
    return held


def _release_future(conn: Any, changes: Dict[str, TableChanges], held: Mapping[str, Mapping[str, str]],
                    future_from: Mapping[str, str]) -> None:
    """Add to ``changes`` the current source rows of the future rows held whose stamps the table's
    ``future_from`` has now passed and that this batch does not change (defect 7: CDC reads only changes,
    so a future row quarantined would otherwise never come back when the clock passes it, as the cursor's
    window brings it back). Read as text, as test_decoding writes values; a row gone meanwhile is left to
    the deletion the slot reports. A row re-read after a later change of it lands that version twice (now
    and from the slot): the load keeps a version once."""
    for table, rows in held.items():
        bound = parse_time(future_from[table])
        found = changes.get(table)
        if found is not None and found.truncated:
            continue
        due = [int(key) for key, stamp in rows.items() if (_stamp(stamp) or bound) < bound
               and not (found and (int(key) in found.rows or int(key) in found.deleted))]
        if not due:
            continue
        columns = LANDING_SCHEMAS[table].names
        # Identifiers from the catalogue's allow-list, quoted; the keys bound as a parameter. Each value as
        # the type's output function writes it (COPY and test_decoding): a boolean as t/f, not true/false.
        listed = ", ".join(_as_text(column) for column in LANDING_SCHEMAS[table])
        key = identifier(PRIMARY_KEYS[table])
        fetched = conn.run(f"SELECT {listed} FROM {identifier(table)} "  # nosec B608
                           f"WHERE {key} = ANY(CAST(:keys AS bigint[]))", keys=due)
        target = changes.setdefault(table, TableChanges())
        for values in fetched:
            row = dict(zip(columns, values))
            target.rows[int(row[PRIMARY_KEYS[table]])] = (row, "future row re-read")
        logger.info("future rows re-read: the source clock passed their stamps", table=table,
                    rows=len(fetched))


def _as_text(column: pa.Field) -> str:
    """The SELECT expression of one landing column's value as text, as test_decoding writes it."""
    name = identifier(column.name)
    if pa.types.is_boolean(column.type):
        return f"CASE WHEN {name} THEN 't' WHEN NOT {name} THEN 'f' END"
    return f"CAST({name} AS text)"


def _windows(conn: Any, state: Mapping[str, Any], prev_tables: Mapping[str, Mapping[str, Any]], zone: str,
             snapshot: str, batch_time: datetime, wall_now: datetime,
             settings: Settings) -> Dict[str, TableWindow]:
    """Each table's ``TableWindow`` (``utils.ingest.zones.table_windows``), as a cursor run computes it."""
    prev_zone = state.get("timezone", LEGACY_TIMEZONE)
    xmax_of = {table: snapshot_bounds(entry["snapshot"])[1] for table, entry in prev_tables.items()
               if entry.get("snapshot")}
    xmin = snapshot_bounds(snapshot)[0]
    carried = {table for table, xmax in xmax_of.items() if xmin < xmax}
    return table_windows(conn, SOURCE_TABLES, prev_tables, Clock(batch_time, wall_now), (prev_zone, zone),
                         settings.ingest_overlap_seconds, Clock.from_state(state), carried)


def _held_table_keys(conn: Any, state: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """{table: the source's current keys} of the tables with deletions held (the state's ``held_deletes``),
    read in one snapshot taken now, before the batch's ``upto`` is fixed: every commit it sees is decoded in
    this batch or an earlier one. Empty (no query) when nothing is held."""
    tables = [table for table in SOURCE_TABLES if table in (state.get("held_deletes") or {})]
    if not tables:
        return {}
    conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        return {table: read_keys(conn, table) for table in tables}
    finally:
        end_quietly(conn)


def _changed_keys(s3_client: Any, bucket: str, table: str, found: TableChanges, batch_time: datetime,
                  previous_key: str, repair: RepairOptions,
                  source_keys: Optional[np.ndarray] = None) -> Landed:
    """The key-set side of one table's changes (no manifest entry): the deleted keys that were in the
    previous key set and are recorded, the key of the new key-set object (None: unchanged) and the
    deletions the mass-delete guard holds (``utils.ingest.delete_guard.hold``, as in cursor mode: more than
    ``repair.max_delete_fraction`` of the table, or all of it, unless ``repair.approved`` names it).

    ``source_keys`` (a table with deletions held: the source's keys read before the batch's end,
    ``_held_table_keys``): the previous key set's ids the source lacked then, less those the batch inserted
    again, are deleted too (the held ones, decided again, as a cursor run's key-set diff decides them on
    every run; a deletion after the batch's end found early is not reported twice, as its id has left the
    key set)."""
    if not (found.inserted or found.deleted or found.truncated or source_keys is not None):
        return Landed(None, None, None)
    previous = read_previous_keys(s3_client, bucket, table, previous_key)
    inserted = _int32(found.inserted)
    if found.truncated:
        # Every key held before the TRUNCATE is gone, except those inserted again after it.
        gone = previous[~_in_sorted(previous, inserted)]
    else:
        deleted = _int32(found.deleted)
        gone = deleted[_in_sorted(deleted, previous)]
    if source_keys is not None:
        missing = previous[~_in_sorted(previous, source_keys)]
        gone = np.union1d(gone, missing[~_in_sorted(missing, inserted)]).astype(np.int32)
    added = inserted[~_in_sorted(inserted, previous)]
    current = previous
    if gone.size:
        current = np.delete(current, np.searchsorted(current, gone))
    if added.size:
        # New keys come from a serial: nearly always above every key held, an append and not a sort.
        current = (np.concatenate([current, added]) if not current.size or added[0] > current[-1]
                   else np.union1d(current, added)).astype(np.int32)
    if gone.size:
        logger.info("deletes captured", table=table, rows=int(gone.size), truncated=found.truncated)
    gone, current, held = hold(table, gone, previous, current, repair.max_delete_fraction, repair.approved)
    if np.array_equal(current, previous):
        return Landed(None, gone, None, held, int(previous.size))
    return Landed(None, gone, write_key_set(s3_client, bucket, table, batch_time, current), held,
                  int(previous.size))


def _land_rows(s3_client: Any, bucket: str, table: str, found: TableChanges, batch_time: datetime,
               bounds: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """Write ``found.rows`` of ``table`` as its Parquet file; return the manifest entry (None: no rows)."""
    if not found.rows:
        return None
    names = LANDING_SCHEMAS[table].names
    sink = ParquetSink(LANDING_SCHEMAS[table], table=table)
    for row, lsn in found.rows.values():
        sink.write(_csv_line(table, names, row, lsn))
    body, rows = sink.close()
    key = generate_file_key(table, batch_time)
    write_to_s3(s3_client, bucket, key, body)
    logger.info("table landed", table=table, rows=rows, key=key)
    return {"key": key, "rows": rows, **bounds}


def _int32(keys: Set[int]) -> np.ndarray:
    """A set of keys as a sorted int32 numpy array."""
    return np.sort(np.fromiter(keys, np.int64, len(keys)).astype(np.int32))


def _in_sorted(values: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Boolean mask: which of ``values`` are in the sorted array ``held`` (binary search, no sort of
    ``held``: a few changed keys against a million held ones)."""
    if not held.size:
        return np.zeros(values.shape, dtype=bool)
    positions = np.minimum(np.searchsorted(held, values), held.size - 1)
    mask: np.ndarray = held[positions] == values
    return mask


def _csv_line(table: str, names: Sequence[str], row: Row, lsn: str) -> bytes:
    """One CSV record as COPY writes it: NULL unquoted and empty, every value quoted."""
    fields = []
    for column in names:
        if column not in row:
            raise CdcDecodeError(table, column, lsn, "the change lacks a column the landing file needs")
        value = row[column]
        fields.append("" if value is None else '"' + value.replace('"', '""') + '"')
    return (",".join(fields) + "\n").encode()
