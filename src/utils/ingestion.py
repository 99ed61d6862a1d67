"""The ingest stage: every change in totesys lands in the ingest bucket as Parquet, exactly once.

One run (``run_ingest``):
1. validate the event (allow-listed table names only), read settings and credentials;
2. take a session advisory lock on the source (a second concurrent run gets ConcurrentRunError);
3. read the state pointer ``_state/ingest.json`` and its ETag;
4. in one REPEATABLE READ READ ONLY transaction read the batch time T (``now()`` in UTC, database
   clock: keys and batch ids), the source's wall clock ``localtimestamp`` and time zone (the session
   keeps the database's configured zone: totesys timestamps are wall-clock values in that zone) and
   ``pg_current_snapshot()``; check the source columns against SOURCE_SCHEMAS (schema drift raises
   SchemaDriftError before anything is landed); then stream each table's changed rows with
   ``COPY (SELECT ...) TO STDOUT`` into Parquet (LANDING_SCHEMAS, bounded memory; timestamps travel as
   epoch milliseconds) and write the file at ``generate_file_key(table, T)`` (immutable); parsing and
   the S3 writes run on two worker
   threads while the main thread reads the next rows, and all of them finish before step 5. With
   INGEST_PARALLEL_CONNECTIONS = n > 1 (default 2), n - 1 more connections import the same snapshot
   (``pg_export_snapshot``) and read a share of the tables, each on a thread of its own;
5. write the manifest ``_batches/...json``, then advance the state pointer with If-Match on the ETag.

Which rows a run takes, per table (``prev`` = this table's entry in the state pointer; all bounds are
source wall-clock times): ``last_updated < high`` where ``high = max(localtimestamp, prev.high)`` (a
daylight-saving fall-back never moves it back), and, after the first run,
``last_updated >= prev.high - overlap`` minus the rows
the previous run already landed: ``last_updated < prev.high`` and written by a transaction that had
certainly finished before ``prev.snapshot`` was taken (full 64-bit xid below the snapshot's xmin).
See docs/DESIGN.md for why the test is "below xmin" and not pg_visible_in_snapshot.
"""
import io
import json
import re
import struct
import threading
import types
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import boto3
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pg8000.exceptions
from pg8000.native import identifier

from utils.config import load_settings
from utils.db_connections import close_db_connection, connect_to_db, db_connections_get_secret
from utils.errors import (ConcurrentRunError, ConfigError, CorruptFileError, InvalidEventError,
                          SourceDataError, TotesysError)
from utils.format_time import format_time, parse_time
from utils.generate_file_key import generate_file_key
from utils.generate_new_entry_query import select_list
from utils.logger import get_logger
from utils.source_schema import check_source_schema
from utils.state import read_state, write_state
from utils.tables import INFINITY_MS, LANDING_SCHEMAS, SOURCE_TABLES, check_source_table
from utils.write_to_s3 import write_to_s3

STAGE = "ingest"
# pg_try_advisory_lock key that serialises ingest runs on the source database ("totesys" in hex-ish).
ADVISORY_LOCK_KEY = 0x7074_6573_7973_0001
# CSV bytes buffered before they are parsed into one Parquet row group. Small enough that most of
# the parsing overlaps the reading of the same table (a 16 MiB chunk left most of the work for the
# end of each table), large enough that per-chunk costs stay negligible.
CHUNK_BYTES = 2 * 1024 * 1024
# Chunks a ParquetSink lets wait for its converter thread before write() blocks (bounded memory).
MAX_QUEUED_CHUNKS = 1
# Tables per reader whose Parquet files may wait, finished or being finished, for their upload
# before that reader's next table blocks (bounded memory: each is one table's compressed file).
# 4 rather than 2 so that the small tables read after a large one do not wait for its upload.
MAX_TABLES_IN_FLIGHT = 4
XID_WRAP = 1 << 32
# What pg_export_snapshot() returns ('%08X-%08X-%d'); SET TRANSACTION SNAPSHOT takes no bound value,
# so the id is checked against this before it is placed in the statement.
SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")
_COPY_DATA, _READY_FOR_QUERY = b"d", b"Z"
_COPY_DATA_BYTE = _COPY_DATA[0]
_SIZE = struct.Struct("!i")
# The zone of a state pointer written before ingest recorded one: sessions were forced to UTC then.
LEGACY_TIMEZONE = "UTC"
# One statement fixes the run: batch time (UTC, DB clock), the source's wall clock and zone, the
# snapshot, and the zone's daylight-saving shift (largest minus smallest UTC offset over this year's
# month starts and now, in seconds) that the overlap must cover.
WINDOW_SQL = (
    "SELECT now() AT TIME ZONE 'UTC', localtimestamp, current_setting('TimeZone'), "
    "pg_current_snapshot()::text, "
    "(SELECT (max(o) - min(o))::int FROM (SELECT extract(timezone FROM now()) AS o UNION ALL "
    "SELECT extract(timezone FROM date_trunc('year', now()) + m * interval '1 month') "
    "FROM generate_series(0, 12) AS m) AS offsets)")

logger = get_logger(STAGE)


def parse_event(event):
    """Return the list of tables an event asks for (all eleven when the key is absent).

    Raises InvalidEventError for a non-dict event or a ``tables_to_query`` that is not a
    non-empty list of strings, UnknownTableError for a name not in the allow-list.
    """
    if not isinstance(event, dict):
        raise InvalidEventError(f"event must be a JSON object, got {type(event).__name__}")
    if "tables_to_query" not in event:
        return list(SOURCE_TABLES)
    tables = event["tables_to_query"]
    if not isinstance(tables, list) or not tables:
        raise InvalidEventError("tables_to_query must be a non-empty list of table names")
    for name in tables:
        check_source_table(name)
    # Dependency order, duplicates dropped.
    return [name for name in SOURCE_TABLES if name in tables]


def run_ingest(event, s3_client=None, secrets_client=None):
    """Run one ingest; return ``{table_name: file_key}`` for the tables that produced a file.

    Raises on any failure (the handler's stage_handler logs it at CRITICAL). Errors before the
    first table is read (bad event, settings, credentials, unreachable database, lock held) write
    nothing.
    """
    tables = parse_event(event)
    settings = load_settings()
    s3_client = s3_client or boto3.client("s3")
    secrets_client = secrets_client or boto3.client("secretsmanager")
    credentials = db_connections_get_secret(secrets_client, settings.totesys_secret_id)
    logger.info("credentials read", secret_id=settings.totesys_secret_id)
    conn, *helpers = connect_all(credentials, min(settings.ingest_parallel_connections, len(tables)))
    try:
        logger.info("connected to totesys", host=credentials["host"], database=credentials["database"],
                    connections=1 + len(helpers))
        return ingest_tables(conn, s3_client, settings.ingest_bucket, tables,
                             settings.ingest_overlap_seconds, helpers)
    finally:
        for connection in (conn, *helpers):
            close_db_connection(connection)


def connect_all(credentials, count):
    """Open ``count`` connections with ``credentials`` at the same time (most of a connect is
    the server's password check); return them in a list. Their sessions keep the database's
    configured time zone (the zone totesys timestamps are written in).

    When any of them fails, the others are closed and the error of the first failed one (in
    list order) is raised, as ``connect_to_db`` raises it.
    """
    if count == 1:
        return [connect_to_db(credentials=credentials, timezone=None)]
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="ingest-connect") as pool:
        pending = [pool.submit(connect_to_db, credentials=credentials, timezone=None)
                   for _ in range(count)]
    opened = [future.result() for future in pending if future.exception() is None]
    if len(opened) < count:
        for conn in opened:
            close_db_connection(conn)
        raise next(future.exception() for future in pending if future.exception() is not None)
    return opened


def ingest_tables(conn, s3_client, bucket, tables, overlap_seconds, helpers=()):
    """Land the changed rows of ``tables`` as one batch; see the module docstring.

    ``conn`` is an open pg8000 native connection to totesys (left open). ``helpers`` are more open
    connections to the same database (left open): each reads a share of the tables on its own
    thread, from the snapshot of ``conn``'s transaction. The sessions' time zone must be the one
    the source's timestamps are written in (``connect_to_db(timezone=None)``). Raises
    ConcurrentRunError when another run holds the lock, StateConflictError when another run
    advanced the state pointer meanwhile (this run's files are then never referenced),
    SchemaDriftError when a column is gone or retyped, ConfigError when ``overlap_seconds`` is
    below the source time zone's daylight-saving shift (nothing is landed in these two cases).
    """
    if not conn.run("SELECT pg_try_advisory_lock(:key)", key=ADVISORY_LOCK_KEY)[0][0]:
        raise ConcurrentRunError("another ingest run holds the lock on the source database; try later")
    try:
        state, etag = read_state(s3_client, bucket, STAGE)
        window, landed = _extract_and_land(conn, s3_client, bucket, tables, state, overlap_seconds, helpers)
        return _commit_batch(s3_client, bucket, tables, window, landed, state, etag)
    finally:
        _cleanup(conn, "SELECT pg_advisory_unlock(:key)", key=ADVISORY_LOCK_KEY)


@dataclass(frozen=True)
class Window:
    """What one run's snapshot transaction fixed.

    ``batch_time``: DB clock in UTC (keys, batch id). ``timezone``: the source's TimeZone setting.
    ``highs``: ``{table: upper bound}`` and ``prev_tables``: the state pointer's ``tables`` (every
    table, ``high`` converted into ``timezone``), both in source wall-clock time.
    ``ignored_columns``: ``{table: [column]}`` the source has beyond the spec.
    """
    batch_time: datetime
    timezone: str
    snapshot: str
    highs: dict
    prev_tables: dict
    overlap_seconds: int
    ignored_columns: dict


def open_window(conn, tables, state, overlap_seconds, export=False):
    """Read the run's bounds in ``conn``'s open snapshot transaction; return ``(Window, exported
    snapshot id or None, the source's wall clock)``.

    Raises ConfigError when ``overlap_seconds`` is below the zone's daylight-saving shift (rows
    stamped in a repeated hour could fall below the window), SchemaDriftError (nothing read yet).
    Logs one WARNING per ignored source column and one when the zone changed since ``state``.
    """
    row = conn.run(WINDOW_SQL + (", pg_export_snapshot()" if export else ""))[0]
    batch_time, wall_now, zone, snapshot, dst_shift = row[:5]
    if overlap_seconds < dst_shift:
        raise ConfigError(
            f"INGEST_OVERLAP_SECONDS={overlap_seconds} is below the daylight-saving shift of the source "
            f"time zone {zone!r} ({dst_shift} s): rows written in the hour repeated after a fall-back "
            f"would be missed; set it to at least {dst_shift}")
    ignored = check_source_schema(conn, tables)
    for table, columns in ignored.items():
        for column in columns:
            logger.warning("source column not in the spec: ignored", table=table, column=column)
    prev_tables = _prev_tables_in_zone(conn, state, zone)
    highs = {}
    for table in tables:
        prev = prev_tables.get(table)
        prev_high = parse_time(prev["high"]) if prev else wall_now
        # A daylight-saving fall-back puts the wall clock back: the bound never moves back, so rows
        # stamped in the repeated hour (fresh xids) still fall in [prev_high - overlap, high).
        highs[table] = max(wall_now, prev_high)
    window = Window(batch_time, zone, snapshot, highs, prev_tables, overlap_seconds, ignored)
    return window, (row[5] if export else None), wall_now


def _prev_tables_in_zone(conn, state, zone):
    """The state pointer's ``tables`` with each ``high`` in ``zone``: a state written in another
    zone (before zones were recorded: UTC) is converted by the server, with one WARNING."""
    prev_tables = {table: dict(entry) for table, entry in state.get("tables", {}).items()}
    old_zone = state.get("timezone", LEGACY_TIMEZONE)
    if not prev_tables or old_zone == zone:
        return prev_tables
    names = sorted(prev_tables)
    converted = conn.run(
        "SELECT (CAST(high AS timestamp) AT TIME ZONE CAST(:old AS text)) AT TIME ZONE CAST(:new AS text) "
        "FROM unnest(CAST(:highs AS text[])) WITH ORDINALITY AS h(high, n) ORDER BY n",
        old=old_zone, new=zone, highs=[prev_tables[name]["high"] for name in names])
    for name, (high,) in zip(names, converted):
        prev_tables[name]["high"] = format_time(high)
    logger.warning("source time zone changed: previous bounds converted", old_timezone=old_zone,
                   timezone=zone, tables=names)
    return prev_tables


def _extract_and_land(conn, s3_client, bucket, tables, state, overlap_seconds, helpers=()):
    """Stream every table out of one snapshot and land its Parquet file; return
    ``(Window, {table: manifest entry})`` (only the tables that landed a file).

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
    converters = [ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-convert")
                  for _ in range(1 + len(helpers))]
    upload = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-upload")
    readers = ThreadPoolExecutor(max_workers=max(len(helpers), 1), thread_name_prefix="ingest-read")
    stop = threading.Event()
    try:
        conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        in_transaction = [conn]
        try:
            window, exported, wall_now = open_window(conn, tables, state, overlap_seconds,
                                                     export=bool(helpers))
            logger.info("snapshot taken", batch_time=format_time(window.batch_time),
                        timezone=window.timezone, wall_clock=format_time(wall_now),
                        snapshot=window.snapshot, connections=1 + len(helpers))
            work = deque(largest_first(conn, tables) if helpers else tables)
            for helper in helpers:
                import_snapshot(helper, exported)
                in_transaction.append(helper)

            def read(connection, convert):
                try:
                    return _read_tables(connection, work, stop, s3_client, bucket, window, convert, upload)
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
                _cleanup(connection, "ROLLBACK")
        landed = {}
        stored = dict(in_flight)
        for table in tables:
            entry = stored[table].result()
            if entry:
                landed[table] = entry
        return window, landed
    except BaseException:
        for convert in converters:
            convert.shutdown(wait=True, cancel_futures=True)
        upload.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        for convert in converters:
            convert.shutdown(wait=True)
        upload.shutdown(wait=True)


def _read_tables(conn, work, stop, s3_client, bucket, window, convert, upload):
    """Take tables from the ``work`` queue until it is empty or ``stop`` is set; extract each
    on ``conn``; return ``[(table, Future of its manifest entry)]``."""
    in_flight = []
    while not stop.is_set():
        try:
            table = work.popleft()
        except IndexError:
            break
        if len(in_flight) >= MAX_TABLES_IN_FLIGHT:
            in_flight[-MAX_TABLES_IN_FLIGHT][1].result()
        in_flight.append((table, _land_table(conn, s3_client, bucket, table, window, convert, upload)))
    return in_flight


def largest_first(conn, tables):
    """``tables`` ordered by their size on disk, largest first (ties keep their order), so that
    parallel readers finish together."""
    sizes = dict(conn.run(
        "SELECT c.relname::text, pg_relation_size(c.oid) FROM pg_class c "
        "WHERE c.relkind = 'r' AND pg_table_is_visible(c.oid) AND c.relname = ANY(CAST(:names AS text[]))",
        names=list(tables)))
    return sorted(tables, key=lambda table: -sizes.get(table, 0))


def import_snapshot(conn, snapshot_id):
    """Open a REPEATABLE READ READ ONLY transaction on ``conn`` that sees the exported snapshot
    ``snapshot_id`` (the exporting transaction must still be open).

    Raises TotesysError for an id that is not what pg_export_snapshot returns (it is placed in
    the SQL text, so nothing else may pass), the server's error for an unknown one.
    """
    if not isinstance(snapshot_id, str) or not SNAPSHOT_ID.fullmatch(snapshot_id):
        raise TotesysError(f"malformed exported snapshot id {snapshot_id!r}")
    conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        # The id matched SNAPSHOT_ID above: hex digits, dashes and digits only.
        conn.run(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
    except BaseException:
        _cleanup(conn, "ROLLBACK")
        raise


def _cleanup(conn, sql, **params):
    """Run a clean-up statement; a broken connection must not hide the error being raised
    (the server ends the transaction and releases the lock when the session ends)."""
    try:
        conn.run(sql, **params)
    except (pg8000.exceptions.InterfaceError, pg8000.exceptions.DatabaseError, OSError):
        pass


def _land_table(conn, s3_client, bucket, table, window, convert=None, upload=None):
    """Extract one table's changed rows and write its Parquet file; return a Future of its
    manifest entry (None when no rows).

    The rows are read here; parsing and the S3 write run on the ``convert`` and ``upload``
    executors when given (single-threaded each, so files and row groups keep their order),
    else inline.
    """
    batch_time, snapshot, prev = window.batch_time, window.snapshot, window.prev_tables.get(table)
    high = format_time(window.highs[table])
    low = None
    params = {"high": high, "low": "", "prev_high": "", "prev_xmin": "0",
              "xid_base": "0", "cur_xmax": "0"}
    if prev:
        prev_high = parse_time(prev["high"])
        low = format_time(prev_high - timedelta(seconds=window.overlap_seconds))
        cur_xmax = snapshot_bounds(snapshot)[1]
        params.update(low=low, prev_high=format_time(prev_high),
                      prev_xmin=str(snapshot_bounds(prev["snapshot"])[0]),
                      xid_base=str(cur_xmax >> 32 << 32), cur_xmax=str(cur_xmax))
    conn.run("SELECT " + ", ".join(f"set_config('totesys.{name}', :{name}, true)" for name in params),
             **params)
    sink = ParquetSink(LANDING_SCHEMAS[table], executor=convert, table=table)
    copy_out(conn, copy_sql(table, incremental=bool(prev)), sink)
    finished = sink.close_async()

    def store():
        body, rows = finished.result()
        if not rows:
            logger.warning("no new rows", table=table, low=low, high=high)
            return None
        key = generate_file_key(table, batch_time)
        write_to_s3(s3_client, bucket, key, body)
        logger.info("table landed", table=table, rows=rows, key=key)
        return {"key": key, "rows": rows, "low": low, "high": high, "snapshot": snapshot}

    return (upload or _INLINE).submit(store)


def _commit_batch(s3_client, bucket, tables, window, landed, state, etag):
    """Write the manifest (if anything landed), then advance the state pointer (CAS).

    The state keeps every table's entry, all in ``window.timezone``; ``ignored_columns`` is the
    previous one with this run's tables replaced by what this run found.
    """
    batch_time = window.batch_time
    batch_id = f"{batch_time:%Y%m%dT%H%M%S%f}"
    ignored = {table: columns for table, columns in state.get("ignored_columns", {}).items()
               if table not in tables}
    ignored.update(window.ignored_columns)
    new_state = {"manifest_key": state.get("manifest_key"), "batch_id": state.get("batch_id"),
                 "timezone": window.timezone, "ignored_columns": ignored,
                 "tables": dict(window.prev_tables)}
    if landed:
        manifest_key = generate_file_key("_batches", batch_time, "json")
        manifest = {"batch_id": batch_id, "batch_time": format_time(batch_time),
                    "timezone": window.timezone, "ignored_columns": window.ignored_columns,
                    "prev_manifest_key": state.get("manifest_key"), "tables": landed}
        write_to_s3(s3_client, bucket, manifest_key, json.dumps(manifest, sort_keys=True))
        logger.info("manifest written", key=manifest_key, tables=len(landed))
        new_state.update(manifest_key=manifest_key, batch_id=batch_id)
    for table in tables:
        new_state["tables"][table] = {"high": format_time(window.highs[table]), "snapshot": window.snapshot}
    write_state(s3_client, bucket, STAGE, new_state, etag)
    logger.info("state advanced", batch_time=format_time(batch_time), tables=tables)
    return {table: entry["key"] for table, entry in landed.items()}


def snapshot_bounds(snapshot_text):
    """Return (xmin, xmax) of a pg_snapshot text 'xmin:xmax:xip,...' as ints."""
    try:
        xmin, xmax, _ = snapshot_text.split(":", 2)
        return int(xmin), int(xmax)
    except (AttributeError, ValueError):
        raise CorruptFileError(f"ingest state holds a malformed snapshot {snapshot_text!r}") from None


def full_xid_sql(raw_xid_sql):
    """SQL for the 64-bit xid of a 32-bit xid (e.g. ``xmin::text::bigint``).

    Uses the epoch of the current snapshot's xmax (settings ``totesys.xid_base`` = epoch << 32 and
    ``totesys.cur_xmax``): a raw xid that would land after xmax belongs to the previous epoch.
    """
    base = "current_setting('totesys.xid_base')::bigint"
    cur = "current_setting('totesys.cur_xmax')::bigint"
    return (f"({base} + {raw_xid_sql} - CASE WHEN {base} + {raw_xid_sql} > {cur} "
            f"THEN {XID_WRAP} ELSE 0 END)")


def copy_sql(table, incremental):
    """The COPY statement for one table; bounds come from the transaction's totesys.* settings."""
    check_source_table(table)
    updated = identifier("last_updated")
    where = f"{updated} < current_setting('totesys.high')::timestamp"
    if incremental:
        where += (f" AND {updated} >= current_setting('totesys.low')::timestamp"
                  f" AND NOT ({updated} < current_setting('totesys.prev_high')::timestamp"
                  f" AND {full_xid_sql('xmin::text::bigint')}"
                  " < current_setting('totesys.prev_xmin')::bigint)")
    # Identifiers come from the allow-list and are quoted; values arrive through set_config.
    return (f"COPY (SELECT {select_list(table)} FROM {identifier(table)} WHERE {where}) "  # nosec B608
            "TO STDOUT WITH (FORMAT csv, HEADER false)")


def copy_out(conn, sql, stream):
    """``conn.run(sql, stream=stream)`` for a ``COPY ... TO STDOUT``, with the server's messages read
    in blocks.

    PostgreSQL sends one CopyData message per row and pg8000 handles each with two socket reads
    and several copies, which costs more than parsing the CSV. For the duration of this call the
    connection reads whatever is buffered, splits it into messages itself and hands the rows of
    each block to ``stream.write`` in one call (blocks always end at a row boundary). Every other
    message goes to pg8000's own handlers, so errors, notices and the end of the statement behave
    exactly as in ``conn.run``.
    """
    conn.handle_messages = types.MethodType(_handle_messages_in_blocks, conn)
    try:
        return conn.run(sql, stream=stream)
    finally:
        del conn.handle_messages


def _handle_messages_in_blocks(conn, context):
    """Drop-in for pg8000's Connection.handle_messages (1.31): same dispatch, block-wise reads."""
    sock, handlers = conn._sock, conn.message_types
    code = None
    try:
        while code != _READY_FOR_QUERY:
            block = sock.peek(1)
            pos, end, rows = 0, len(block), []
            append, unpack_size = rows.append, _SIZE.unpack_from
            while pos + 5 <= end:
                stop = pos + 1 + unpack_size(block, pos + 1)[0]
                if stop > end:
                    break
                if block[pos] == _COPY_DATA_BYTE:
                    append(block[pos + 5:stop])
                    pos = stop
                    continue
                code = block[pos:pos + 1]
                if rows:
                    context.stream_write(b"".join(rows))
                    rows.clear()
                handlers[code](block[pos + 5:stop], context)
                pos = stop
                if code == _READY_FOR_QUERY:
                    break
            if pos:
                sock.read(pos)
                if rows:
                    context.stream_write(b"".join(rows))
                continue
            # The next message is not wholly buffered: read it the plain way.
            header = _read_exactly(sock, 5)
            code = header[:1]
            data = _read_exactly(sock, int.from_bytes(header[1:], "big") - 4)
            if code == _COPY_DATA:
                context.stream_write(data)
            else:
                handlers[code](data, context)
    except OSError as err:
        raise pg8000.exceptions.InterfaceError("network error") from err
    if context.error is not None:
        raise context.error


def _read_exactly(sock, size):
    data = sock.read(size)
    if len(data) != size:
        raise pg8000.exceptions.InterfaceError("network error")
    return data


class _Inline:
    """An executor that runs each job at once in the calling thread."""

    @staticmethod
    def submit(fn, *args):
        future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:
            future.set_exception(err)
        return future


_INLINE = _Inline()


class ParquetSink:
    """A write-only stream for ``COPY ... TO STDOUT (FORMAT csv)`` that turns the CSV into Parquet.

    CSV bytes are buffered up to ``chunk_bytes`` and then parsed with pyarrow.csv using the
    table's explicit schema into one Parquet row group, so memory stays bounded by the chunk size
    (or the largest row) plus the (compressed) Parquet output. NULL is an unquoted empty field and
    the empty string a quoted one (PostgreSQL's CSV rules), so the two stay distinct. A row of any
    size parses: each chunk is one pyarrow block. Timestamps of years pyarrow's parser does not
    read (BC, after 9999) are converted by ``wall_time_to_epoch_ms`` (only in a chunk that holds
    one). The file written is readable with exactly ``schema``: a value the schema cannot hold (a
    NULL in a non-nullable field, 'infinity', an unparsable number) raises SourceDataError naming
    ``table``, the column and the value, never a raw ArrowInvalid.

    With an ``executor`` (one worker thread, so row groups keep their order) the chunks are parsed
    and written there while the caller keeps writing; at most MAX_QUEUED_CHUNKS wait behind the
    one being converted, and a conversion error is re-raised by the next ``write`` or by the
    close. Without one everything runs inline.
    """

    def __init__(self, schema, chunk_bytes=CHUNK_BYTES, executor=None, table=None):
        self.schema = schema
        self.table = table
        self.chunk_bytes = chunk_bytes
        self.rows = 0
        self._parts, self._size = [], 0
        self._executor = executor or _INLINE
        self._pending = deque()
        self._out = io.BytesIO()
        self._writer = None
        self._dictionary_columns = [field.name for field in schema if pa.types.is_string(field.type)]
        self._parse = pa_csv.ParseOptions(newlines_in_values=True)
        self._convert = self._convert_options({field.name: field.type for field in schema})
        # For a chunk holding a timestamp pyarrow cannot parse: timestamps read as text.
        self._convert_times_as_text = self._convert_options(
            {field.name: pa.string() if pa.types.is_timestamp(field.type) else field.type
             for field in schema})

    @staticmethod
    def _convert_options(column_types):
        return pa_csv.ConvertOptions(
            column_types=column_types, null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"])

    def write(self, data):
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.chunk_bytes:
            self._submit(final=False)

    def close(self):
        """Flush the rest; return (BytesIO of the Parquet file or None when no rows, row count)."""
        return self.close_async().result()

    def close_async(self):
        """Queue the flush of the rest; return a Future of what ``close`` returns."""
        self._submit(final=True)
        return self._executor.submit(self._finish)

    def _submit(self, final):
        data = b"".join(self._parts)
        cut = len(data) if final else record_boundary(data)
        self._parts = [data[cut:]] if cut < len(data) else []
        self._size = len(data) - cut
        if cut <= 0:
            return
        while len(self._pending) > MAX_QUEUED_CHUNKS:
            self._pending.popleft().result()
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()
        self._pending.append(self._executor.submit(self._flush, data[:cut] if cut < len(data) else data))

    def _flush(self, chunk):
        # One block per chunk: a block must hold whole rows, and a row may be larger than any default.
        read = pa_csv.ReadOptions(column_names=self.schema.names, block_size=len(chunk) + 1)
        try:
            parsed = pa_csv.read_csv(pa.BufferReader(chunk), read_options=read,
                                     parse_options=self._parse, convert_options=self._convert)
            columns = parsed.columns
        except pa.ArrowInvalid as err:
            error = self._parse_error(err)
            if error.column is None or not pa.types.is_timestamp(self.schema.field(error.column).type):
                raise error from err
            parsed = pa_csv.read_csv(pa.BufferReader(chunk), read_options=read, parse_options=self._parse,
                                     convert_options=self._convert_times_as_text)
            columns = [self._timestamps_from_text(field.name, column) if pa.types.is_timestamp(field.type)
                       else column for field, column in zip(self.schema, parsed.columns)]
        for field, column in zip(self.schema, columns):
            if column.null_count and not field.nullable:
                raise SourceDataError(self.table, field.name, None,
                                      "NULL in a column the landing schema declares NOT NULL")
        table = pa.Table.from_arrays(columns, schema=self.schema)
        if self._writer is None:
            # Dictionary encoding only where it pays (text: codes, names, dates): on ids, amounts and
            # timestamps it made the files larger and tripled the time spent writing them.
            self._writer = pq.ParquetWriter(self._out, self.schema, compression="snappy",
                                            use_dictionary=self._dictionary_columns)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _timestamps_from_text(self, column_name, texts):
        """timestamp[ms] array of PostgreSQL's text of ``timestamp`` values (any year)."""
        millis = []
        for text in texts.to_pylist():
            try:
                millis.append(None if text is None else wall_time_to_epoch_ms(text))
            except ValueError as err:
                raise SourceDataError(self.table, column_name, text[:200], str(err)) from None
        return pa.array(millis, pa.int64()).cast(pa.timestamp("ms"))

    def _parse_error(self, err):
        """SourceDataError for a pyarrow CSV error, with the column and value when pyarrow names them."""
        message = str(err)
        column = re.search(r"CSV column #(\d+)", message)
        column = self.schema.names[int(column.group(1))] if column else None
        value = re.search(r"invalid value '(.*)'", message, re.DOTALL)
        value = value.group(1)[:200] if value else None
        return SourceDataError(self.table, column, value, message.splitlines()[0][:300])

    def _finish(self):
        while self._pending:
            self._pending.popleft().result()
        if self._writer is None:
            return None, 0
        self._writer.close()
        self._out.seek(0)
        return self._out, self.rows


_WALL_TIME = re.compile(r"(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?( BC)?")


def wall_time_to_epoch_ms(text):
    """Milliseconds from 1970-01-01 00:00 to the wall time ``text`` (PostgreSQL's ISO output of a
    ``timestamp``: 'YYYY-MM-DD HH:MM:SS[.ffffff][ BC]', any year, proleptic Gregorian calendar),
    truncated to the millisecond. 'infinity' and '-infinity' become INFINITY_MS and -INFINITY_MS (the
    ends of timestamp[ms]: the landing zone keeps the row, the transform quarantines it). Raises
    ValueError for anything else."""
    if text in ("infinity", "-infinity"):
        return INFINITY_MS if text == "infinity" else -INFINITY_MS
    match = _WALL_TIME.fullmatch(text)
    if not match:
        raise ValueError("not a finite timestamp: timestamp[ms] cannot hold it")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    if match.group(8):
        year = 1 - year  # 1 BC is year 0
    # Days from 1970-01-01 to year-month-day (H. Hinnant's days_from_civil), exact for any year.
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    fraction = int((match.group(7) or "0").ljust(6, "0")) // 1000
    return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + fraction


def record_boundary(buffer):
    """Return the length of the longest prefix of CSV ``buffer`` that ends at a record boundary.

    A newline ends a record only outside quotes, i.e. where the number of '"' before it is even
    (an escaped quote is two quotes, so the parity rule holds). 0 when there is no such newline.
    """
    pos = buffer.rfind(b"\n")
    while pos >= 0:
        if buffer.count(b'"', 0, pos) % 2 == 0:
            return pos + 1
        pos = buffer.rfind(b"\n", 0, pos)
    return 0
