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
4. peek the slot's changes up to ``upto`` and fold them per key (``TableChanges``): the last version of each
   row, the keys inserted and deleted;
5. land each table's rows as a Parquet file (``ParquetSink``: LANDING_SCHEMAS, the same checks as a COPY),
   the deleted keys that were landed before as the ``_deleted`` object, the changed key sets;
6. write the manifest, then the state pointer (CAS) with ``cdc.lsn = upto``, and only THEN advance the slot
   to ``upto``; emit ``CdcRetainedWalBytes``.

The state's per-table ``high``/``snapshot``/``keys`` stay valid for the cursor mode: every transaction below
the run's xmin committed (and was flushed) before ``upto``, so its rows are landed, and the key sets are the
previous ones plus inserts minus deletes. Switching back to INGEST_MODE=cursor continues from them.
"""
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Dict, Optional, cast

import numpy as np
import pyarrow as pa
from pg8000.native import identifier

from utils.aws.layout import INGEST_MANIFESTS
from utils.aws.objects import write_to_s3
from utils.aws.state import read_ingest_state, write_ingest_state
from utils.contracts import IngestState
from utils.catalog.source import LANDING_SCHEMAS, PRIMARY_KEYS, SOURCE_TABLES
from utils.catalog.source_schema import check_source_schema
from utils.db.connection import end_quietly
from utils.errors import ConcurrentRunError, DateFormatError
from utils.format_time import format_time, parse_time
from utils.generate_file_key import generate_file_key
from utils.ingest.cdc.decode import CdcDecodeError, parse_line
from utils.ingest.cdc.fallback import snapshot_reason, take_snapshot
from utils.ingest.cdc.metric import emit_retained_wal
from utils.ingest.cdc.slot import (advance_slot, check_prerequisites, flush_wal, lsn_int, peek_changes,
                                   slot_info)
from utils.ingest.deletes import read_previous_keys, write_deleted, write_key_set
from utils.ingest.run import ADVISORY_LOCK_KEY, STAGE
from utils.ingest.sink import ParquetSink
from utils.ingest.snapshot import LEGACY_TIMEZONE, WINDOW_SQL, _prev_tables_in_zone, snapshot_bounds
from utils.ingest.zones import Clock, table_windows
from utils.ingest.source_identity import with_source_identity
from utils.logger import get_logger

CDC_STATE = "cdc"
# Threads writing one batch's objects to S3 (and reading the previous key sets) at the same time.
S3_THREADS = 8

logger = get_logger(STAGE)


@dataclass
class TableChanges:
    """One table's changes in a batch, folded per key: ``rows`` {key: (row, lsn)} the last version of each
    row still there, ``inserted`` and ``deleted`` the keys whose last change inserted or deleted them."""
    rows: Dict[int, tuple] = field(default_factory=dict)
    inserted: set = field(default_factory=set)
    deleted: set = field(default_factory=set)

    def apply(self, change):
        if change.old_key is not None:
            self._delete(change.old_key)
        if change.kind == "DELETE":
            self._delete(change.key)
            return
        self.rows[change.key] = (change.row, change.lsn)
        self.deleted.discard(change.key)
        if change.kind == "INSERT" or change.old_key is not None:
            self.inserted.add(change.key)

    def _delete(self, key):
        self.rows.pop(key, None)
        self.inserted.discard(key)
        self.deleted.add(key)


def fold_changes(lines, schema):
    """{table: TableChanges} of the peeked ``[(lsn, line)]`` (CdcDecodeError for a line it cannot read)."""
    tables: Dict[str, TableChanges] = {}
    for lsn, line in lines:
        change = parse_line(lsn, line, schema)
        if change is not None:
            tables.setdefault(change.table, TableChanges()).apply(change)
    return tables


def ingest_changes(conn, s3_client, settings, tables, repair, helpers=(), repoint_source=False):
    """Run one CDC ingest (module docstring); return ``{table: file_key}`` of the tables that landed rows.

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
        state = with_source_identity(conn, state, repoint_source)
        slot = slot_info(conn, name)
        reason = snapshot_reason(conn, state, slot, name, repair)
        if reason is not None:
            result = take_snapshot(conn, s3_client, settings, repair, helpers, reason, repoint_source)
        else:
            result = land_changes(conn, s3_client, bucket, state, etag, slot, settings)
        slot = slot_info(conn, name)
        if slot is not None and slot.retained_bytes is not None:
            emit_retained_wal(slot.retained_bytes)
        return result
    finally:
        end_quietly(conn, "SELECT pg_advisory_unlock(:key)", key=ADVISORY_LOCK_KEY)


def land_changes(conn, s3_client, bucket, state, etag, slot, settings):
    """Steps 2-6 of the module docstring; return ``{table: file_key}``."""
    name, landed_lsn = settings.cdc_slot_name, state[CDC_STATE]["lsn"]
    if lsn_int(slot.confirmed_flush_lsn) < lsn_int(landed_lsn):
        logger.info("slot behind the state pointer: advanced to it (the previous run stopped before "
                    "advancing it; its batch is landed)", slot=name, lsn=landed_lsn)
        advance_slot(conn, name, landed_lsn)
    batch_time, wall_now, zone, snapshot, dst_shift, schema = conn.run(
        WINDOW_SQL + ", current_schema()::text")[0]
    upto = flush_wal(conn)
    ignored = check_source_schema(conn, SOURCE_TABLES)
    changes = fold_changes(peek_changes(conn, name, upto), schema)
    prev_tables = _prev_tables_in_zone(conn, state, zone)
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
    _release_future(conn, changes, held_future, future_from)
    bounds = {table: {"low": prev_tables[table]["high"], "high": format_time(highs[table]),
                      "snapshot": snapshot, "future_from": future_from[table]} for table in changes}

    def land(table):
        found = changes[table]
        return table, (_land_rows(s3_client, bucket, table, found, batch_time, bounds[table]),
                       *_changed_keys(s3_client, bucket, table, found, batch_time,
                                      prev_tables[table]["keys"]))

    # Each table's S3 reads and writes are independent: one round trip for all of them, not one per object.
    with ThreadPoolExecutor(max_workers=S3_THREADS, thread_name_prefix="cdc-land") as pool:
        done = dict(pool.map(land, list(changes)))
    landed = {table: entry for table, (entry, _, _) in done.items() if entry}
    deleted = {table: gone for table, (_, gone, _) in done.items() if gone is not None and gone.size}
    keys = {table: key for table, (_, _, key) in done.items() if key}
    # The cursor's bounds kept current (switching back to cursor mode reads from them), with this run's
    # UTC time and the source clock's offset, as a cursor run records them (utils.ingest.zones).
    tables = {table: dict(prev_tables[table], high=format_time(highs[table]), snapshot=snapshot,
                          future_from=future_from[table], keys=keys.get(table, prev_tables[table]["keys"]),
                          utc=format_time(batch_time), offsets=sorted(windows[table].offsets))
              for table in SOURCE_TABLES}
    new_state = dict(state, timezone=zone, more_waiting=False, ignored_columns=ignored, tables=tables,
                     clock={"utc": format_time(batch_time), "wall": format_time(wall_now)},
                     **{CDC_STATE: _pointer(name, upto, _future_held(changes, future_from, held_future))})
    deleted_entry = write_deleted(s3_client, bucket, batch_time, deleted) if deleted else None
    if landed or deleted_entry:
        manifest_key = generate_file_key(INGEST_MANIFESTS, batch_time, "json")
        batch_id = f"{batch_time:%Y%m%dT%H%M%S%f}"
        manifest = {"batch_id": batch_id, "batch_time": format_time(batch_time), "timezone": zone,
                    "ignored_columns": ignored, "prev_manifest_key": state.get("manifest_key"),
                    "tables": landed}
        if deleted_entry:
            manifest["deleted"] = deleted_entry
        write_to_s3(s3_client, bucket, manifest_key, json.dumps(manifest, sort_keys=True))
        logger.info("manifest written", key=manifest_key, tables=len(landed))
        new_state.update(manifest_key=manifest_key, batch_id=batch_id)
    write_ingest_state(s3_client, bucket, cast(IngestState, new_state), etag)
    logger.info("state advanced", batch_time=format_time(batch_time), lsn=upto, mode="cdc")
    advance_slot(conn, name, upto)
    logger.info("slot advanced", slot=name, lsn=upto,
                changes=sum(len(found.rows) + len(found.deleted) for found in changes.values()))
    return {table: entry["key"] for table, entry in landed.items()}


def _pointer(name, lsn, future):
    """The state's ``cdc`` entry: the slot, the LSN landed, and the future rows held (when any)."""
    return {"slot": name, "lsn": lsn, **({"future": future} if future else {})}


def _stamp(text):
    """A landed row's ``last_updated`` text as a datetime; None when it is none (NULL, 'infinity': the
    transform quarantines those for their own reason)."""
    try:
        return parse_time(text)
    except DateFormatError:
        return None


def _future_held(changes, future_from, previous):
    """{table: {key: last_updated}} of the rows this batch lands as future rows (stamped at or after the
    table's ``future_from``: the transform quarantines them), with those held before and not changed or
    deleted since (docs/RELIABILITY.md, defect 7)."""
    held = {table: dict(rows) for table, rows in previous.items()}
    for table, found in changes.items():
        bound = parse_time(future_from[table])
        rows = held.setdefault(table, {})
        for key in found.deleted:
            rows.pop(str(key), None)
        for key, (row, _) in found.rows.items():
            stamp = _stamp(row.get("last_updated"))
            if stamp is not None and stamp >= bound:
                rows[str(key)] = row["last_updated"]
            else:
                rows.pop(str(key), None)
    return {table: rows for table, rows in held.items() if rows}


def _snapshot_future(conn, prev_tables):
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


def _release_future(conn, changes, held, future_from):
    """Add to ``changes`` the current source rows of the future rows held whose stamps the table's
    ``future_from`` has now passed and that this batch does not change (defect 7: CDC reads only changes,
    so a future row quarantined would otherwise never come back when the clock passes it, as the cursor's
    window brings it back). Read as text, as test_decoding writes values; a row gone meanwhile is left to
    the deletion the slot reports. A row re-read after a later change of it lands that version twice (now
    and from the slot): the load keeps a version once."""
    for table, rows in held.items():
        bound = parse_time(future_from[table])
        found = changes.get(table)
        due = [int(key) for key, stamp in rows.items() if (_stamp(stamp) or bound) < bound
               and not (found and (int(key) in found.rows or int(key) in found.deleted))]
        if not due:
            continue
        columns = LANDING_SCHEMAS[table].names
        # Identifiers from the catalogue's allow-list, quoted; the keys bound as a parameter. Each value as
        # the type's output function writes it (COPY and test_decoding): a boolean as t/f, not true/false.
        listed = ", ".join(_as_text(field) for field in LANDING_SCHEMAS[table])
        key = identifier(PRIMARY_KEYS[table])
        fetched = conn.run(f"SELECT {listed} FROM {identifier(table)} "  # nosec B608
                           f"WHERE {key} = ANY(CAST(:keys AS bigint[]))", keys=due)
        target = changes.setdefault(table, TableChanges())
        for values in fetched:
            row = dict(zip(columns, values))
            target.rows[int(row[PRIMARY_KEYS[table]])] = (row, "future row re-read")
        logger.info("future rows re-read: the source clock passed their stamps", table=table,
                    rows=len(fetched))


def _as_text(field):
    """The SELECT expression of one landing column's value as text, as test_decoding writes it."""
    column = identifier(field.name)
    if pa.types.is_boolean(field.type):
        return f"CASE WHEN {column} THEN 't' WHEN NOT {column} THEN 'f' END"
    return f"CAST({column} AS text)"


def _windows(conn, state, prev_tables, zone, snapshot, batch_time, wall_now, settings):
    """Each table's ``TableWindow`` (``utils.ingest.zones.table_windows``), as a cursor run computes it."""
    prev_zone = state.get("timezone", LEGACY_TIMEZONE)
    xmax_of = {table: snapshot_bounds(entry["snapshot"])[1] for table, entry in prev_tables.items()
               if entry.get("snapshot")}
    xmin = snapshot_bounds(snapshot)[0]
    carried = {table for table, xmax in xmax_of.items() if xmin < xmax}
    return table_windows(conn, SOURCE_TABLES, prev_tables, Clock(batch_time, wall_now), (prev_zone, zone),
                         settings.ingest_overlap_seconds, Clock.from_state(state), carried)


def _changed_keys(s3_client, bucket, table, found, batch_time, previous_key):
    """(the deleted keys that were in the previous key set, the key of the new key-set object) of one
    table's changes; (None, None) when no key was inserted or deleted."""
    if not (found.inserted or found.deleted):
        return None, None
    previous = read_previous_keys(s3_client, bucket, table, previous_key)
    deleted, inserted = _int32(found.deleted), _int32(found.inserted)
    gone = deleted[_in_sorted(deleted, previous)]
    if gone.size:
        logger.info("deletes captured", table=table, rows=int(gone.size))
    added = inserted[~_in_sorted(inserted, previous)]
    if not added.size and not gone.size:
        return gone, None
    current = previous
    if gone.size:
        current = np.delete(current, np.searchsorted(current, gone))
    if added.size:
        # New keys come from a serial: nearly always above every key held, an append and not a sort.
        current = (np.concatenate([current, added]) if not current.size or added[0] > current[-1]
                   else np.union1d(current, added))
    return gone, write_key_set(s3_client, bucket, table, batch_time, current)


def _land_rows(s3_client, bucket, table, found, batch_time, bounds) -> Optional[dict]:
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


def _int32(keys):
    """A set of keys as a sorted int32 numpy array."""
    return np.sort(np.fromiter(keys, np.int64, len(keys)).astype(np.int32))


def _in_sorted(values, held):
    """Boolean mask: which of ``values`` are in the sorted array ``held`` (binary search, no sort of
    ``held``: a few changed keys against a million held ones)."""
    if not held.size:
        return np.zeros(values.shape, dtype=bool)
    positions = np.minimum(np.searchsorted(held, values), held.size - 1)
    return held[positions] == values


def _csv_line(table, names, row, lsn):
    """One CSV record as COPY writes it: NULL unquoted and empty, every value quoted."""
    fields = []
    for column in names:
        if column not in row:
            raise CdcDecodeError(table, column, lsn, "the change lacks a column the landing file needs")
        value = row[column]
        fields.append("" if value is None else '"' + value.replace('"', '""') + '"')
    return (",".join(fields) + "\n").encode()
