"""The cursor mode's batch: every change in totesys lands in the ingest bucket as Parquet, exactly once.

One run (``ingest_tables``; ``utils.ingest.modes.run_ingest`` validates the event, reads the settings and
the credentials, opens the connections and chooses the mode; a CDC snapshot is this batch too):
1. (the caller) validate the event (allow-listed table names only), read settings and credentials;
2. take a session advisory lock on the source (a second concurrent run gets ConcurrentRunError);
3. read the state pointer ``_state/ingest.json`` and its ETag;
4. in one REPEATABLE READ READ ONLY transaction read the batch time T (``now()`` in UTC, database
   clock: keys and batch ids), the source's wall clock ``localtimestamp`` and time zone (the session
   keeps the database's configured zone: totesys timestamps are wall-clock values in that zone) and
   ``pg_current_snapshot()``; check the source columns against SOURCE_SCHEMAS (schema drift raises
   SchemaDriftError before anything is landed; ``snapshot``); then stream each table's changed rows with
   ``COPY (SELECT ...) TO STDOUT`` (``copy_reader``) into Parquet (``sink``: LANDING_SCHEMAS, bounded
   memory) and write the file at ``generate_file_key(table, T)`` (immutable); parsing and
   the S3 writes run on two worker
   threads while the main thread reads the next rows, and all of them finish before step 5. With
   INGEST_PARALLEL_CONNECTIONS = n > 1 (default 2), n - 1 more connections import the same snapshot
   (``pg_export_snapshot``) and read a share of the tables, each on a thread of its own;
5. write the manifest ``_batches/...json``, then advance the state pointer with If-Match on the ETag.

Which rows a run takes, per table (``prev`` = this table's entry in the state pointer; all bounds are
source wall-clock times): ``last_updated < high`` where ``high = max(prev.high, now + the largest UTC
offset in play)`` (it never moves back), and, after the first run, ``last_updated >= min(prev.high,
prev.utc + the smallest offset in play) - overlap`` (``utils.ingest.zones``: the source clock's offset
moves with daylight saving and zone changes) minus the rows the previous run already landed:
``last_updated < prev.high`` and written by a transaction that had certainly finished before
``prev.snapshot`` was taken (full 64-bit xid below the snapshot's xmin).
See docs/DESIGN.md for why the test is "below xmin" and not pg_visible_in_snapshot. Besides the window,
the rows below ``high`` of keys new since the previous run (backdated rows), and future rows (at or after
``future_from``), are landed too (``utils.ingest.backdated``).
"""
import threading
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Collection, Deque, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, cast

import numpy as np

import pg8000

from utils.aws.layout import INGEST_MANIFESTS
from utils.aws.objects import write_to_s3
from utils.aws.manifests import write_ingest_manifest
from utils.aws.state import read_ingest_state, write_ingest_state
from utils.ingest.source_identity import with_source_identity
from utils.catalog.source import LANDING_SCHEMAS
from utils.config import DEFAULT_INGEST_FUTURE_TOLERANCE_SECONDS
from utils.contracts import CdcPointer, DeletedEntry, IngestManifest, IngestState, IngestTableEntry
from utils.db.connection import end_quietly
from utils.errors import ConcurrentRunError
from utils.format_time import format_time, parse_time
from utils.generate_file_key import generate_file_key
from utils.ingest.backdated import backdated_settings, log_new_keys, new_keys
from utils.ingest.copy_reader import SUPPORTED_PG8000, copy_out, fast_copy_supported
from utils.ingest.delete_guard import still_held
from utils.ingest.deletes import (Detection, carried_detection, detect_deletes, held_deletes, landed_keys,
                                  read_key_sets, read_previous_keys)
from utils.ingest.repair import RepairOptions
from utils.ingest.sink import INLINE, ParquetSink
from utils.ingest.snapshot import (Window, copy_sql, import_snapshot, largest_first, open_window,
                                   snapshot_bounds)
from utils.logger import get_logger

STAGE = "ingest"
# pg_try_advisory_lock key that serialises ingest runs on the source database ("totesys" in hex-ish).
ADVISORY_LOCK_KEY = 0x7074_6573_7973_0001

# Tables per reader whose Parquet files may wait, finished or being finished, for their upload
# before that reader's next table blocks (bounded memory: each is one table's compressed file).
# 4 rather than 2 so that the small tables read after a large one do not wait for its upload.
MAX_TABLES_IN_FLIGHT = 4
# A backfill's intermediate round (the cut leaves rows waiting) reads no key sets when the state holds
# every table's, read at most this long ago: delete detection, and the landing of backdated rows of keys
# new since the key sets, happen in a later round instead (``_key_sets_due``; issue 24).
KEY_SETS_MAX_AGE_SECONDS = 900


logger = get_logger(STAGE)


@dataclass(frozen=True)
class IngestOptions:
    """How a run reads, from the settings and the event: ``overlap_seconds`` re-read below each table's
    previous bound; ``max_batch_rows`` (0: no cap; ``utils.ingest.bounded``); ``repair``: tables landed in
    full and the mass-delete guard (``utils.ingest.repair``); ``repoint_source``
    (``utils.ingest.source_identity``); ``future_tolerance_seconds`` (None: future rows wait); ``fresh``:
    every table read as on its first run (no window from the previous bounds: the whole table, cut at
    ``max_batch_rows`` as a first load is), its deletions still found against the previous key sets (a
    CDC snapshot, ``utils.ingest.cdc.fallback``)."""
    overlap_seconds: int
    max_batch_rows: int = 0
    repair: RepairOptions = RepairOptions()
    repoint_source: bool = False
    future_tolerance_seconds: Optional[int] = DEFAULT_INGEST_FUTURE_TOLERANCE_SECONDS
    fresh: bool = False


@dataclass(frozen=True)
class IngestRun:
    """One run's fixed inputs: ``conn`` (it holds the lock) and the ``helpers`` connections, where the
    objects go (``s3_client``, ``bucket``), the ``tables`` read and the ``options``."""
    conn: Any
    s3_client: Any
    bucket: str
    tables: List[str]
    options: IngestOptions
    helpers: Tuple[Any, ...] = ()


@dataclass(frozen=True)
class Found:
    """What a run found, for ``_commit_batch``: its ``window``, the ``landed`` manifest entries
    {table: entry}, the delete ``detection`` and the manifest's ``deleted`` entry (None: no deletes);
    ``keys_read``: whether the run read the key sets (``_key_sets_due``)."""
    window: Window
    landed: Dict[str, IngestTableEntry]
    detection: Optional[Detection] = None
    deleted: Optional[DeletedEntry] = None
    keys_read: bool = True


def ingest_tables(conn: Any, s3_client: Any, bucket: str, tables: List[str], options: IngestOptions,
                  helpers: Sequence[Any] = (), cdc: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """Land the changed rows of ``tables`` as one batch, read as ``options`` (IngestOptions) say; see the
    module docstring.

    ``conn`` is an open pg8000 native connection to totesys (left open). ``helpers`` are more open
    connections to the same database (left open): each reads a share of the tables on its own
    thread, from the snapshot of ``conn``'s transaction. The sessions' time zone must be the one
    the source's timestamps are written in (``connect_to_db(timezone=None)``). Raises
    ConcurrentRunError when another run holds the lock, StateConflictError when another run
    advanced the state pointer meanwhile (this run's files are then never referenced),
    SchemaDriftError when a column is gone or retyped, ConfigError when ``overlap_seconds`` is
    below the source time zone's daylight-saving shift (nothing is landed in these two cases).
    ``options.max_batch_rows`` (0: no cap) bounds the batch (``utils.ingest.bounded``); the state pointer's
    ``more_waiting`` then says whether rows were left for the next batch. ``options.repair``: tables landed
    in full (``utils.ingest.resync``) and the mass-delete guard's settings (``utils.ingest.delete_guard``).
    The state pointer's ``source`` records the source's identity: a run that reaches another database
    raises DatabaseIdentityError (nothing landed) unless ``options.repoint_source``
    (``utils.ingest.source_identity``).
    Rows stamped more than ``options.future_tolerance_seconds`` ahead of the source clock are landed for
    quarantine (None: they wait). ``cdc``: the CDC slot's pointer the new state records (a CDC snapshot).
    """
    if not conn.run("SELECT pg_try_advisory_lock(:key)", key=ADVISORY_LOCK_KEY)[0][0]:
        raise ConcurrentRunError("another ingest run holds the lock on the source database; try later")
    try:
        run = IngestRun(conn, s3_client, bucket, tables, options, tuple(helpers))
        state, etag = read_ingest_state(s3_client, bucket)
        state = with_source_identity(conn, state, options.repoint_source)
        # (a plan of cuts of an earlier backfill is no plan for a first read either)
        fresh = {name: value for name, value in state.items() if name not in ("tables", "planned_cuts")}
        window, landed, key_sets, landed_ids = _extract_and_land(run, fresh if options.fresh else state,
                                                                 may_skip_keys=cdc is None)
        previous = state.get("tables", {}) if options.fresh else window.prev_tables
        if key_sets is None:
            detection = carried_detection(s3_client, bucket, window.batch_time, state, run.tables, landed_ids)
            # held deletions alerted again, as by every run that reads the keys (the alarm keeps ringing)
            still_held(cast(Mapping[str, Mapping[str, int]], detection.held),
                       options.repair.max_delete_fraction)
            deleted = None
        else:
            detection, deleted = detect_deletes(s3_client, bucket, window.batch_time, previous,
                                                key_sets, options.repair)
        return _commit_batch(run, state, etag, Found(window, landed, detection, deleted,
                                                     keys_read=key_sets is not None), cdc)
    finally:
        end_quietly(conn, "SELECT pg_advisory_unlock(:key)", key=ADVISORY_LOCK_KEY)


def _extract_and_land(run: IngestRun, state: Mapping[str, Any], may_skip_keys: bool = False
                      ) -> Tuple[Window, Dict[str, IngestTableEntry], Optional[Dict[str, np.ndarray]],
                                 Dict[str, np.ndarray]]:
    """Stream every table of ``run`` (IngestRun) out of one snapshot and land its Parquet file; return
    ``(Window, {table: manifest entry}, {table: sorted primary keys}, {table: landed ids})`` (entries only
    for the tables that landed a file; keys of every table, read on the same snapshot before the rows:
    ``utils.ingest.deletes``; the keys new since the previous run land whatever their last_updated).
    With ``may_skip_keys``, a round that ``_key_sets_due`` says may go without reads no keys: None
    in their place, and no backdated rows of new keys are landed (the next round that reads them does);
    the ids of the rows it landed are returned instead ({} when it read the keys).

    The work is pipelined over threads so that it overlaps the server producing the rows: each
    reader's converter thread parses its CSV chunks into Parquet row groups and finishes each file
    (pyarrow releases the GIL), the upload thread writes the finished files to S3. The calling
    thread reads COPY streams from ``conn``; with ``helpers`` each helper connection is read by a
    thread of its own (one thread per connection: pg8000 connections are not thread-safe), in a
    transaction that imported ``conn``'s snapshot (``pg_export_snapshot``) before any reader
    starts, so every table comes from the same snapshot. The readers take the tables largest first
    from a shared queue; a reader that fails stops the others before their next table. The queues
    are bounded (MAX_QUEUED_CHUNKS per table, MAX_TABLES_IN_FLIGHT tables per reader). Every file is written,
    or its error re-raised here, before this returns: the caller writes the manifest and the state
    pointer only after that. On an error the queued work is cancelled and the running jobs are
    waited for, so no thread writes after this raises.
    """
    conn, s3_client, bucket, tables, helpers = run.conn, run.s3_client, run.bucket, run.tables, run.helpers
    options = run.options
    converters = [ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-convert")
                  for _ in range(1 + len(helpers))]
    upload = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-upload")
    readers = ThreadPoolExecutor(max_workers=max(len(helpers), 1), thread_name_prefix="ingest-read")
    stop = threading.Event()
    try:
        conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        in_transaction = [conn]
        try:
            window, exported, wall_now = open_window(
                conn, tables, cast(IngestState, state), options.overlap_seconds, export=bool(helpers),
                max_batch_rows=options.max_batch_rows,
                future_tolerance_seconds=options.future_tolerance_seconds)
            logger.info("snapshot taken", batch_time=format_time(window.batch_time),
                        timezone=window.timezone, wall_clock=format_time(wall_now),
                        snapshot=window.snapshot, connections=1 + len(helpers))
            for helper in helpers:
                import_snapshot(helper, exported)
                in_transaction.append(helper)
            key_sets = read_key_sets(in_transaction, tables) \
                if not may_skip_keys or _key_sets_due(window, state, tables, options) else None
            extraction = Extraction(s3_client, bucket, window, upload, stop,
                                    deque(largest_first(conn, tables) if helpers else tables),
                                    fast_copy=_fast_copy_or_warn(), resync=frozenset(options.repair.resync),
                                    new_keys=_new_keys(s3_client, bucket, window.prev_tables, key_sets)
                                    if key_sets is not None else {},
                                    landed_ids=None if key_sets is not None else {})

            def read(connection: Any, convert: Executor) -> List[Tuple[str, Future]]:
                try:
                    return _read_tables(connection, extraction, convert)
                except BaseException:
                    stop.set()
                    raise

            shares = [readers.submit(read, helper, convert)
                      for helper, convert in zip(helpers, converters[1:])]
            in_flight = read(conn, converters[0])
            for share in shares:
                in_flight += share.result()
        finally:
            stop.set()
            readers.shutdown(wait=True)
            for connection in in_transaction:
                end_quietly(connection)
        landed: Dict[str, IngestTableEntry] = {}
        stored = dict(in_flight)
        for table in tables:
            entry = stored[table].result()
            if entry:
                landed[table] = entry
        return window, landed, key_sets, extraction.landed_ids or {}
    except BaseException:
        for convert in converters:
            convert.shutdown(wait=True, cancel_futures=True)
        upload.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        for convert in converters:
            convert.shutdown(wait=True)
        upload.shutdown(wait=True)


@dataclass(frozen=True)
class Extraction:
    """What the readers of one run share: where the files go (``s3_client``, ``bucket``), the run's
    ``window``, the ``upload`` executor (None: inline), the ``stop`` event a failing reader sets, the
    ``work`` queue of tables not taken yet, whether the fast COPY reader may be used, the tables
    landed in full (``resync``) and ``new_keys`` {table: sorted keys new since the previous run};
    ``landed_ids`` (not None: a round that read no key sets) gets {table: ids of the rows landed}."""
    s3_client: Any
    bucket: str
    window: Window
    upload: Optional[Executor]
    stop: threading.Event
    work: Deque[str]
    fast_copy: bool = True
    resync: FrozenSet[str] = frozenset()
    new_keys: Dict[str, np.ndarray] = field(default_factory=dict)
    landed_ids: Optional[Dict[str, np.ndarray]] = None


def _key_sets_due(window: Window, state: Mapping[str, Any], tables: Sequence[str],
                  options: IngestOptions) -> bool:
    """Whether this round must read the key sets. Every round does, but a backfill's intermediate one:
    the cut leaves rows waiting (``window.more_waiting``), nothing is re-synced, no deletion approved,
    no table read as new (``options.fresh``), the state holds a key set of every table read and says
    they were read (``keys_read``, the batch time of that round) at most KEY_SETS_MAX_AGE_SECONDS before
    this round's batch time (by the same database clock; a clock that went back reads them).

    Skipping loses nothing: the round that reads them compares with the key sets the state still names,
    so a deletion since is found there (of a row never landed, or landed in between: a round that skips
    them adds the ids it landed to the carried set, ``carried_detection``), and the keys new
    since (rows inserted meanwhile, backdated ones among them) are landed there whatever their stamp; a
    row an intermediate round landed too is a version the warehouse holds, and loading it again writes
    nothing (docs/DESIGN.md, "Bounded batches"). At most KEY_SETS_MAX_AGE_SECONDS late, whatever the
    length of the backfill."""
    if not window.more_waiting or options.fresh or options.repair.resync or options.repair.approved:
        return True
    if any(not (window.prev_tables.get(table) or {}).get("keys") for table in tables):
        return True
    read = state.get("keys_read")
    if not read:
        return True
    age = (window.batch_time - parse_time(read)).total_seconds()
    return not 0 <= age <= KEY_SETS_MAX_AGE_SECONDS


def keys_read_after(state: Mapping[str, Any], tables: Collection[str], read: Optional[datetime]
                    ) -> Optional[str]:
    """The state's ``keys_read`` after a run of ``tables`` that read the key sets at ``read`` (None: it
    read none): the time of the oldest key set the state names. A run of every table the state holds sets
    it; a run of some of them (``tables_to_query``) leaves the others' older sets, so it keeps the
    previous time (None when the state had none: the next backfill round reads them all)."""
    if read is not None and set(tables) >= set(state.get("tables") or {}):
        return format_time(read)
    return state.get("keys_read")


def _new_keys(s3_client: Any, bucket: str, prev_tables: Mapping[str, Any],
              key_sets: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """{table: the keys of ``key_sets`` not in the previous run's key set} (none on a table's first run)."""
    found = {}
    for table, keys in key_sets.items():
        previous_key = (prev_tables.get(table) or {}).get("keys")
        previous = read_previous_keys(s3_client, bucket, table, previous_key) if previous_key else None
        found[table] = new_keys(previous, keys)
        log_new_keys(table, found[table])
    return found


def _fast_copy_or_warn() -> bool:
    """True when the installed pg8000 is one the fast COPY reader was written for; otherwise one
    WARNING for the run, and its COPYs use pg8000's own ``stream=`` path."""
    if fast_copy_supported():
        return True
    logger.warning("fast COPY reader disabled: written for another pg8000; using pg8000's own COPY",
                   pg8000_version=pg8000.__version__, supported=list(SUPPORTED_PG8000))
    return False


def _read_tables(conn: Any, extraction: Extraction, convert: Executor) -> List[Tuple[str, Future]]:
    """Take tables from ``extraction.work`` until it is empty or ``extraction.stop`` is set; extract
    each on ``conn``; return ``[(table, Future of its manifest entry)]``."""
    in_flight: List[Tuple[str, Future]] = []
    while not extraction.stop.is_set():
        try:
            table = extraction.work.popleft()
        except IndexError:
            break
        if len(in_flight) >= MAX_TABLES_IN_FLIGHT:
            in_flight[-MAX_TABLES_IN_FLIGHT][1].result()
        in_flight.append((table, _land_table(conn, extraction, table, convert)))
    return in_flight


def _land_table(conn: Any, extraction: Extraction, table: str,
                convert: Optional[Executor] = None) -> Future:
    """Extract one table's changed rows and write its Parquet file; return a Future of its
    manifest entry (None when no rows).

    The rows are read here; parsing and the S3 write run on the ``convert`` and
    ``extraction.upload`` executors when given (single-threaded each, so files and row groups keep
    their order), else inline.
    """
    window = extraction.window
    batch_time, snapshot, prev = window.batch_time, window.snapshot, window.prev_tables.get(table)
    if table in extraction.resync:
        prev = None  # a re-sync reads the table in full, as a first run does (utils.ingest.resync)
        logger.info("table re-synced: read in full", table=table)
    high = format_time(window.highs[table])
    low = None
    params = {"high": high, "low": "", "prev_high": "", "prev_xmin": "0",
              "xid_base": "0", "cur_xmax": "0"}
    if prev:
        prev_high = parse_time(prev["high"])
        low = format_time(window.lows[table])
        cur_xmax = snapshot_bounds(snapshot)[1]
        params.update(low=low, prev_high=format_time(prev_high),
                      prev_xmin=str(snapshot_bounds(prev["snapshot"])[0]),
                      xid_base=str(cur_xmax >> 32 << 32), cur_xmax=str(cur_xmax))
    keys = extraction.new_keys.get(table)
    backdated = keys is not None and len(keys) > 0
    if keys is not None and backdated:
        params.update(backdated_settings(keys))
    future_from = window.future_from.get(table)
    after_future = bool(prev and future_from and prev.get("future_from"))
    if future_from:
        params["future_from"] = format_time(future_from)
    if after_future:
        params["prev_future_from"] = cast(Mapping[str, str], prev)["future_from"]
    conn.run("SELECT " + ", ".join(f"set_config('totesys.{name}', :{name}, true)" for name in params),
             **params)
    sink = ParquetSink(LANDING_SCHEMAS[table], executor=convert, table=table)
    copy_out(conn, copy_sql(table, incremental=bool(prev), backdated=backdated, future=bool(future_from),
                            after_future=after_future), sink, fast=extraction.fast_copy)
    finished = sink.close_async()

    def store() -> Optional[IngestTableEntry]:
        body, rows = finished.result()
        if not rows:
            logger.warning("no new rows", table=table, low=low, high=high)
            return None
        key = generate_file_key(table, batch_time)
        write_to_s3(extraction.s3_client, extraction.bucket, key, body)
        if extraction.landed_ids is not None and body is not None:
            extraction.landed_ids[table] = landed_keys(body, table)
        logger.info("table landed", table=table, rows=rows, key=key)
        entry: IngestTableEntry = {"key": key, "rows": rows, "low": low, "high": high, "snapshot": snapshot}
        if future_from:
            entry["future_from"] = params["future_from"]
        return entry

    return (extraction.upload or INLINE).submit(store)


def _commit_batch(run: IngestRun, state: Mapping[str, Any], etag: Optional[str], found: Found,
                  cdc: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """Write the manifest (if anything landed or was deleted), then advance the state pointer (CAS) from
    ``state`` read with ``etag``; ``cdc``: the CDC slot's pointer recorded in the new state.

    The state keeps every table's entry, all in ``found.window.timezone``, with its key set
    (``found.detection.keys``); ``ignored_columns`` is the previous one with this run's tables replaced by
    what this run found. ``found.deleted``: the manifest's ``deleted`` entry (``utils.ingest.deletes``).
    """
    s3_client, bucket, tables = run.s3_client, run.bucket, run.tables
    window, landed, detection, deleted = found.window, found.landed, found.detection, found.deleted
    batch_time = window.batch_time
    batch_id = f"{batch_time:%Y%m%dT%H%M%S%f}"
    ignored = {table: columns for table, columns in state.get("ignored_columns", {}).items()
               if table not in tables}
    ignored.update(window.ignored_columns)
    new_state: IngestState = {
        "manifest_key": state.get("manifest_key"), "batch_id": state.get("batch_id"),
        "timezone": window.timezone, "ignored_columns": ignored,
        "tables": dict(state.get("tables", {}), **window.prev_tables), "more_waiting": window.more_waiting,
        "source": state.get("source"), "clock": {"utc": format_time(batch_time),
                                                 "wall": format_time(cast(datetime, window.wall_clock))}}
    if landed or deleted:
        manifest_key = generate_file_key(INGEST_MANIFESTS, batch_time, "json")
        manifest: IngestManifest = {
            "batch_id": batch_id, "batch_time": format_time(batch_time),
            "timezone": window.timezone, "ignored_columns": window.ignored_columns,
            "prev_manifest_key": state.get("manifest_key"), "tables": landed}
        if deleted:
            manifest["deleted"] = deleted
        write_ingest_manifest(s3_client, bucket, manifest_key, manifest)
        logger.info("manifest written", key=manifest_key, tables=len(landed))
        new_state["manifest_key"], new_state["batch_id"] = manifest_key, batch_id
    for table in tables:
        new_state["tables"][table] = {"high": format_time(window.highs[table]), "snapshot": window.snapshot,
                                      "utc": format_time(batch_time), "offsets": window.offsets[table]}
        if table in window.future_from:
            new_state["tables"][table]["future_from"] = format_time(window.future_from[table])
        if detection and table in detection.keys:
            new_state["tables"][table]["keys"] = detection.keys[table]
    if window.planned_cuts:
        new_state["planned_cuts"] = [format_time(cut) for cut in window.planned_cuts]
    if detection is not None:
        new_state["held_deletes"] = held_deletes(state, tables, detection)
        read = keys_read_after(state, tables, batch_time if found.keys_read else None)
        if read:
            new_state["keys_read"] = read
    if cdc is not None:
        new_state["cdc"] = cast(CdcPointer, dict(cdc))
    write_ingest_state(s3_client, bucket, new_state, etag)
    logger.info("state advanced", batch_time=format_time(batch_time), tables=tables)
    return {table: entry["key"] for table, entry in landed.items()}
