"""Loading one processed batch: COPY into staging tables, set-based upserts and appends, the rows the
warehouse cannot hold recorded in ``etl_rejected_rows`` (parked facts retried), the ledger row, all in
ONE transaction.

Each batch takes the next load order (``etl_load_order_seq``, recorded in the ledger): a batch carries
the source's state at its snapshot, never older than an earlier batch's, whatever the source's clock
stamped, so the current version of a row is the one loaded last (docs/RELIABILITY.md defect 3).
Dimensions are upserted (an UPDATE of the changed rows, then an INSERT of the new keys; dim_date rows are
only inserted; a versioned dimension row records the load order of the version it holds), facts are
appended (an INSERT of the versions, natural id and last_updated, not yet held, each with the load order
of its batch; a version already held that the batch brings back while another is current is re-marked
with the batch's order). A batch already in the ledger is skipped; any failure rolls the whole batch
back. Concurrent loads are serialised by a transaction-level advisory lock.
"""
import json
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pg8000.exceptions
import pyarrow as pa
import pyarrow.compute as pc
from pg8000.native import identifier

from utils.aws.manifests import read_deleted, read_source_ids
from utils.aws.objects import read_parquet_table
from utils.catalog.formats import REJECTED_SCHEMA, rejected_records
from utils.catalog.warehouse import (FACTS, PROCESSED_SCHEMAS, VERSION_COLUMN, VERSIONED_DIMENSIONS,
                                     WAREHOUSE_KEYS, WAREHOUSE_SCHEMAS, WAREHOUSE_SOURCES, WAREHOUSE_TABLES,
                                     optional_columns)
from utils.db.connection import end_quietly
from utils.db.copy_in import csv_stream
from utils.errors import CorruptFileError, ForeignKeyViolationError, SchemaMismatchError
from utils.load.constraints import checked_at_once, is_foreign_key_violation
from utils.load.locks import bound_lock_waits, is_lock_timeout, lock_wait_error
from utils.load.deletes import record_deleted
from utils.load.rollups import FACT_SOURCES, update_rollups
from utils.load.schema import (ADVISORY_LOCK_KEY, DELETED, DIMENSION_VERSIONS, LEDGER, LOAD_ORDER_COLUMN,
                               REJECTED, TargetTable, next_load_order, sql_type)
from utils.load.staging import ParallelStaging, start_staging
from utils.logger import get_logger

# ERROR lines written per table and batch for newly rejected rows (one each); the rest is one summary line.
MAX_REJECTED_LOG_LINES = 20
# The value key of a parked record: a hash of its row data without the load order and the NULL columns
# (a column added to the catalogue leaves the key of a version parked before as it was). The same
# expression gives the records parked before value keys theirs (utils/catalog/sql/warehouse_schema.sql).
PARKED_VALUE_KEY = f"md5(jsonb_strip_nulls(row_data - '{LOAD_ORDER_COLUMN}')::text)"
# work_mem of a batch's transaction (SET LOCAL: its COMMIT ends it), with JIT off: with the server's default
# (4 MB), a 2M-row batch's version sorts (the fact append's DISTINCT ON, the probe of the versions held) and
# the hash of a large dimension in the dangling-reference checks spill to temporary files, and each append
# paid JIT compilation (issue 24, third pass; docs/BENCHMARKS.md). The rollups' statements use the same.
BATCH_WORK_MEM = "256MB"
# A fact's reference column with at most this many distinct values in a batch is checked by probing the
# dimension for each distinct value, not by an anti-join over the staged rows (``_park_dangling``).
PROBE_MAX_DISTINCT = 50_000


logger = get_logger("load")


def batch_loaded(conn: Any, batch_id: str) -> bool:
    """True when the ledger records ``batch_id``."""
    sql = f"SELECT 1 FROM {identifier(LEDGER)} WHERE batch_id = :batch_id"  # nosec B608
    return bool(conn.run(sql, batch_id=batch_id))


def read_batch_tables(s3_client: Any, bucket: str, manifest: Mapping[str, Any],
                      manifest_key: Optional[str] = None) -> Dict[str, pa.Table]:
    """{warehouse table: pyarrow Table} of one processed batch, in load order (dims before facts)."""
    return {name: read_parquet_table(s3_client, bucket, manifest["tables"][name]["key"], name,
                                     PROCESSED_SCHEMAS[name], manifest_key=manifest_key,
                                     missing_as_null=optional_columns(name))
            for name in WAREHOUSE_TABLES if name in manifest["tables"]}


def read_batch_rejected(s3_client: Any, bucket: str, manifest: Mapping[str, Any],
                        manifest_key: Optional[str] = None) -> pa.Table:
    """The rejected records the transform wrote for one processed batch (none: an empty table)."""
    entry = manifest.get("rejected")
    if not entry:
        return REJECTED_SCHEMA.empty_table()
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        raise CorruptFileError(f"manifest {manifest_key}: entry 'rejected' has no file key", key=manifest_key,
                               table=REJECTED)
    # value_key: none in a file the transform wrote before it (the load records the empty key).
    return read_parquet_table(s3_client, bucket, entry["key"], REJECTED, REJECTED_SCHEMA,
                              manifest_key=manifest_key, missing_as_null=("value_key",))


@dataclass(frozen=True)
class Warehouse:
    """The warehouse a load writes: ``conn`` (each batch's transaction), ``targets`` {table: TargetTable}
    (``utils.load.schema.ensure_warehouse_schema``) and ``connect`` (a callable returning a new warehouse
    connection, for staging on a second one; None: no second connection)."""
    conn: Any
    targets: Dict[str, Any]
    connect: Optional[Callable[[], Any]] = None


def load_batch(warehouse: Warehouse, s3_client: Any, bucket: str, manifest_key: str,
               manifest: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """Load one processed batch into ``warehouse`` (Warehouse) in one transaction, reading it from
    ``bucket``; return {table: rows written} (with
    ``etl_rejected_rows``: {source table: rows newly rejected}, ``etl_deleted_rows``: {source table:
    deletions newly recorded}), or None when the ledger already holds it. Every file is read and
    checked before the transaction starts.

    Rows that do not fit the warehouse's columns, and fact rows that reference a dimension row the
    warehouse does not hold, are recorded in etl_rejected_rows instead of failing the batch.

    ``warehouse.connect``, when given, stages the tables on a second connection while ``warehouse.conn``
    merges (``utils.load.staging``).
    """
    conn, targets, connect = warehouse.conn, warehouse.targets, warehouse.connect
    tables = read_batch_tables(s3_client, bucket, manifest, manifest_key)
    rejected = [read_batch_rejected(s3_client, bucket, manifest, manifest_key)]
    for name in list(tables):
        tables[name], bad = split_by_limits(name, tables[name], targets[name].limits)
        rejected.append(bad)
    rejected = pa.concat_tables(rejected)
    deleted_keys = read_deleted(s3_client, bucket, manifest, manifest_key)
    source_ids = read_source_ids(manifest, manifest_key)
    batch_id = manifest["batch_id"]
    # READ COMMITTED whatever the warehouse's default: each statement must see the stages the staging
    # connection committed before it (utils.load.staging).
    conn.run("START TRANSACTION ISOLATION LEVEL READ COMMITTED")
    staging = None
    try:
        conn.run("SELECT pg_advisory_xact_lock(:key), set_config('work_mem', :work_mem, true), "
                 "set_config('jit', 'off', true)", key=ADVISORY_LOCK_KEY, work_mem=BATCH_WORK_MEM)
        bound_lock_waits(conn)  # no lock of the batch waits unboundedly on a reader (issue 19)
        if batch_loaded(conn, batch_id):
            conn.run("ROLLBACK")
            logger.warning("batch already loaded", batch_id=batch_id)
            return None
        load_order = next_load_order(conn)
        staging = start_staging(connect, {name: tables[name] for name in WAREHOUSE_TABLES if name in tables},
                                lambda name: _stage_definitions(name, stage_flags(name)), _copy_columns)
        counts: Dict[str, Any] = {}
        remarked: Dict[str, List[int]] = {}
        distinct: List[str] = []
        newly_rejected = record_rejected(conn, rejected, batch_id)
        for name in WAREHOUSE_TABLES:
            if name in FACTS:
                merged = merge_fact(conn, name, tables.get(name), targets[name], batch_id, staging,
                                    load_order)
                if merged.inserted is not None:
                    counts[name] = merged.inserted
                if merged.remarked:
                    remarked[name] = merged.remarked
                if merged.distinct_ids:
                    distinct.append(name)
                for source, number in merged.parked.items():
                    newly_rejected[source] = newly_rejected.get(source, 0) + number
            elif name in tables:
                counts[name] = merge_table(conn, name, tables[name], targets[name].names, staging, load_order)
        if newly_rejected:
            counts[REJECTED] = newly_rejected
        newly_deleted = record_deleted(conn, deleted_keys, tables, batch_id, source_ids)
        if newly_deleted:
            counts[DELETED] = newly_deleted
        # the dashboard's aggregates, as current as the facts
        update_rollups(conn, batch_id, tables, load_order, remarked, distinct)
        record_batch(conn, batch_id, manifest_key, counts, load_order)
        if staging is not None:
            staging.close(conn, list(staging.futures))
        conn.run("COMMIT")
    except BaseException as err:
        if staging is not None:
            staging.close()
        end_quietly(conn)
        if isinstance(err, pg8000.exceptions.DatabaseError) and is_lock_timeout(err):
            raise lock_wait_error(conn, WAREHOUSE_TABLES, f"batch {batch_id}") from err
        raise
    if remarked:
        logger.info("versions already held made current again", batch_id=batch_id,
                    ids={name: len(ids) for name, ids in remarked.items()})
    logger.info("batch loaded", batch_id=batch_id, tables=counts, load_order=load_order)
    return counts


def record_batch(conn: Any, batch_id: str, manifest_key: Optional[str], counts: Mapping[str, Any],
                 load_order: Optional[int] = None) -> None:
    """Insert the ledger row of a batch, with its load order (inside the batch's transaction)."""
    conn.run(f"INSERT INTO {identifier(LEDGER)} "  # nosec B608
             "(batch_id, manifest_key, row_counts, load_order) "
             "VALUES (:batch_id, :manifest_key, CAST(:counts AS jsonb), :load_order)",
             batch_id=batch_id, manifest_key=manifest_key, counts=json.dumps(counts, sort_keys=True),
             load_order=load_order)


# -- rows the warehouse cannot hold ------------------------------------------------------------------

def _source_versions(name: str, table: pa.Table) -> Tuple[str, Any, Any]:
    """(source table, ids, last_updated) of the rows of a processed table."""
    source, id_column = WAREHOUSE_SOURCES[name]
    if name in FACTS:
        micros = pc.cast(table["last_updated_time"], pa.int64())
        days = pc.cast(pc.cast(table["last_updated_date"], pa.int32()), pa.int64())
        stamps = pc.add(pc.multiply(days, 86_400_000), pc.divide(micros, 1000)).cast(pa.timestamp("ms"))
    else:
        stamps = table[VERSION_COLUMN]
    return source, table[id_column], stamps


def _over_limit(column: Any, limit: Tuple[Any, ...]) -> Any:
    """Boolean mask: the values of ``column`` that do not fit ``limit`` (see TargetTable)."""
    kind = limit[0]
    if kind == "length":
        return pc.greater(pc.utf8_length(column), limit[1])
    if kind == "range":
        return pc.or_(pc.less(column, limit[1]), pc.greater(column, limit[2]))
    bound = 10 ** limit[1]
    return pa.array([value is not None and abs(value) >= bound for value in column.to_pylist()])


def split_by_limits(name: str, table: pa.Table,
                    limits: Mapping[str, Tuple[Any, ...]]) -> Tuple[pa.Table, pa.Table]:
    """Split a processed table into (rows that fit the warehouse's columns, rejected records).

    ``limits`` as in TargetTable. dim_date has no source row to quarantine: a dim_date column too
    narrow for its values is a SchemaMismatchError naming the column.
    """
    keep = pa.array([True] * table.num_rows)
    records = [REJECTED_SCHEMA.empty_table()]
    for column, limit in limits.items():
        bad = pc.and_(pc.fill_null(_over_limit(table[column], limit), False), keep)
        if not pc.any(bad).as_py():
            continue
        if name not in WAREHOUSE_SOURCES:
            raise SchemaMismatchError(f"warehouse table {name}: column {column!r} is too narrow for "
                                      f"{table.filter(bad)[column][0].as_py()!r}", table=name)
        picked = table.filter(bad)
        source, ids, stamps = _source_versions(name, picked)
        records.append(rejected_records(source, ids, stamps, column,
                                        f"does not fit {name}.{column} ({_limit_text(limit)})",
                                        picked[column], picked))
        keep = pc.and_(keep, pc.invert(bad))
    return table.filter(keep), pa.concat_tables(records)


def _limit_text(limit: Tuple[Any, ...]) -> str:
    if limit[0] == "length":
        return f"at most {limit[1]} characters"
    if limit[0] == "range":
        return f"integers from {limit[1]} to {limit[2]}"
    return f"at most {limit[1]} digits before the decimal point"


def _log_rejected(batch_id: str, source: str, source_id: Any, column: Optional[str], reason: str,
                  value: Any = None) -> None:
    """The ERROR line of one row newly recorded in etl_rejected_rows."""
    logger.error("row rejected", batch_id=batch_id, source_table=source, source_id=source_id,
                 column=column, reason=reason, value=value)


def record_rejected(conn: Any, rejected: pa.Table, batch_id: str) -> Dict[str, int]:
    """Insert rejected records (a REJECTED_SCHEMA table) into etl_rejected_rows; a row version (source
    table, id, stamp and value key) already recorded is left as it is. A record from before value keys
    (the empty key, no row data) of a staged record's stamp is first given that record's key, so a
    version recorded then and read again is still recorded once (``claim_unkeyed``). Returns {source
    table: records newly inserted}; logs one ERROR line each (the first MAX_REJECTED_LOG_LINES, then a
    summary)."""
    if not rejected.num_rows:
        return {}
    columns = [field.name for field in REJECTED_SCHEMA]
    conn.run("CREATE TEMPORARY TABLE stage_rejected (source_table text, source_id bigint, "
             "last_updated timestamp(3), column_name text, reason text, value text, value_key text) "
             "ON COMMIT DROP")
    conn.run(f"COPY stage_rejected ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)",
             stream=csv_stream(rejected))
    # A record without a key (written by a transform before value keys) is recorded with the empty key:
    # one record per stamp, as before.
    conn.run("UPDATE stage_rejected SET value_key = '' WHERE value_key IS NULL")
    claim_unkeyed(conn)
    listed = ", ".join(identifier(column) for column in columns)
    rows = conn.run(
        f"INSERT INTO {identifier(REJECTED)} ({listed}, batch_id) "  # nosec B608
        f"SELECT {listed}, :batch_id FROM stage_rejected ON CONFLICT DO NOTHING "
        "RETURNING source_table, source_id, column_name, reason, value", batch_id=batch_id)
    counts: Dict[str, int] = {}
    for number, (source, source_id, column, reason, value) in enumerate(rows):
        counts[source] = counts.get(source, 0) + 1
        if number < MAX_REJECTED_LOG_LINES:
            _log_rejected(batch_id, source, source_id, column, reason, value)
    if len(rows) > MAX_REJECTED_LOG_LINES:
        logger.error("more rows rejected", batch_id=batch_id, not_listed=len(rows) - MAX_REJECTED_LOG_LINES)
    return counts


def claim_unkeyed(conn: Any) -> None:
    """Give each record of etl_rejected_rows recorded before value keys (the empty key, no row data) the
    key of a record in ``stage_rejected`` of its stamp (source table, id, last_updated; of several, the
    least key), so that a version recorded then and read again (the overlap, a re-sync, a CDC snapshot)
    maps to it instead of a second record (docs/RELIABILITY.md defect 16). Such a record stood for one
    version of its stamp, which one unknown: the first read again takes it."""
    conn.run(f"UPDATE {identifier(REJECTED)} AS r SET value_key = s.value_key "  # nosec B608
             "FROM (SELECT DISTINCT ON (source_table, source_id, last_updated) source_table, source_id, "
             "last_updated, value_key FROM stage_rejected WHERE value_key <> '' "
             "ORDER BY source_table, source_id, last_updated, value_key) s "
             "WHERE r.value_key = '' AND r.row_data IS NULL AND r.source_table = s.source_table "
             "AND r.source_id = s.source_id AND r.last_updated = s.last_updated "
             f"AND NOT EXISTS (SELECT 1 FROM {identifier(REJECTED)} k "
             "WHERE k.source_table = s.source_table AND k.source_id = s.source_id "
             "AND k.last_updated = s.last_updated AND k.value_key = s.value_key)")


# -- merging ---------------------------------------------------------------------------------------

def stage_flags(name: str) -> Tuple[str, ...]:
    """The boolean columns a table's stage has beside the processed schema's (see merge_table)."""
    if name in FACTS or name not in WAREHOUSE_SCHEMAS:
        return ()
    return ("etl_held", "etl_versioned") if name in VERSIONED_DIMENSIONS else ("etl_held",)


def _copy_columns(name: str) -> str:
    """The column list of a stage's COPY: the processed schema's columns."""
    return ", ".join(identifier(field.name) for field in PROCESSED_SCHEMAS[name])


def _stage_definitions(name: str, flags: Sequence[str]) -> str:
    """A stage's columns: the processed schema's, its boolean ``flags``, and for a fact the load order of
    each staged row (NULL: the batch's own; a parked row keeps the order of the batch that parked it)."""
    columns = [f"{identifier(field.name)} {sql_type(field.type)[0]}" for field in PROCESSED_SCHEMAS[name]]
    if name in FACTS:
        columns.append(f"{identifier(LOAD_ORDER_COLUMN)} bigint")
    return ", ".join(columns + [f"{identifier(flag)} boolean" for flag in flags])


def _stage(conn: Any, name: str, table: Optional[pa.Table], staging: Optional[ParallelStaging] = None) -> str:
    """The staging table of ``name`` (the processed schema's columns, then its ``stage_flags``, NULL until
    set) holding ``table``: the one ``staging`` made, else a temporary one made and filled here."""
    if staging is not None and name in staging.futures:
        return staging.stage(conn, name)
    stage = identifier(f"stage_{name}")
    conn.run(f"CREATE TEMPORARY TABLE {stage} ({_stage_definitions(name, stage_flags(name))}) ON COMMIT DROP")
    if table is not None and table.num_rows:
        conn.run(f"COPY {stage} ({_copy_columns(name)}) FROM STDIN WITH (FORMAT csv)",
                 stream=csv_stream(table))
    return stage


def merge_table(conn: Any, name: str, table: Optional[pa.Table], column_map: Mapping[str, str],
                staging: Optional[ParallelStaging] = None, load_order: int = 0) -> int:
    """COPY a dimension's rows into a staging table, then upsert them into ``name``.

    Returns the number of rows inserted or changed. A versioned dimension row is written unless a batch
    loaded later (a greater load order) recorded its version in etl_dimension_version; its version
    (source last_updated) and ``load_order`` are recorded when the version differs. The latest loaded
    version wins, not the greatest last_updated: a back-dated update, a source clock that went back, or
    a row restored to an earlier version is the source's current state when the batch read it.

    The upsert is an UPDATE of the rows whose values changed, then an INSERT of the keys the table does
    not hold, not ``INSERT ... ON CONFLICT``: speculative insertion costs about twice a plain insert per
    row (dim_transaction at scale 10: 0.30 s against 0.15 s). Loads are serialised by the advisory lock,
    so no other writer can add a key between the statements. The staged rows whose key is held are
    marked first, with the table as it is (never ``INSERT INTO t ... WHERE NOT EXISTS (... t ...)``: on a
    table whose statistics say empty, PostgreSQL may plan that anti-join as a sequential scan per row of
    the heap the INSERT is growing, quadratic: 76 s instead of 0.15 s for dim_transaction at scale 10).
    """
    schema = WAREHOUSE_SCHEMAS[name]
    versioned = name in VERSIONED_DIMENSIONS
    stage = _stage(conn, name, table, staging)
    source_columns = ", ".join(f"s.{identifier(field.name)}" for field in schema)
    target_columns = ", ".join(identifier(column_map[field.name]) for field in schema)
    keys = WAREHOUSE_KEYS[name]
    key_column = identifier(keys[0])
    key = identifier(column_map[keys[0]])
    newer = ""
    if versioned:
        newer = (f"AND NOT EXISTS (SELECT 1 FROM {identifier(DIMENSION_VERSIONS)} v "  # nosec B608
                 f"WHERE v.table_name = :name AND v.source_id = s.{key_column} "
                 "AND v.load_order > :load_order) ")
    # A batch of keys the warehouse has never seen (a backfill's transactions): nothing to update, mark
    # or compare, and no newer version to skip (issue 24: four of the six statements of dim_transaction).
    fresh = _keys_unseen(conn, name, stage, key_column, key, versioned)
    if fresh:
        newer = ""
    params = {"name": name, "load_order": load_order} if newer else {}
    written = 0
    others = [field.name for field in schema if field.name not in keys]
    if name != "dim_date" and not fresh:  # dim_date rows never change: a date already held is left as it is
        assignments = ", ".join(f"{identifier(column_map[column])} = s.{identifier(column)}"
                                for column in others)
        current = ", ".join(f"target.{identifier(column_map[column])}" for column in others)
        incoming = ", ".join(f"s.{identifier(column)}" for column in others)
        conn.run(f"UPDATE {identifier(name)} AS target SET {assignments} FROM {stage} s "  # nosec B608
                 f"WHERE target.{key} = s.{key_column} AND ({current}) IS DISTINCT FROM ({incoming}) "
                 + newer, **params)
        written += conn.row_count
    if not fresh:
        conn.run(f"UPDATE {stage} s SET etl_held = true FROM {identifier(name)} t "  # nosec B608
                 f"WHERE t.{key} = s.{key_column}")
    conn.run(f"INSERT INTO {identifier(name)} ({target_columns}) "  # nosec B608
             f"SELECT {source_columns} FROM {stage} s WHERE s.etl_held IS NULL " + newer, **params)
    written += conn.row_count
    if versioned:
        versions = identifier(DIMENSION_VERSIONS)
        version = identifier(VERSION_COLUMN)
        if not fresh:
            # A version the table holds already (the overlap reading it again) keeps the order of the
            # batch that brought it: no write per re-read row.
            conn.run(f"UPDATE {versions} AS v SET last_updated = s.{version}, "  # nosec B608
                     f"load_order = :load_order FROM {stage} s "
                     f"WHERE v.table_name = :name AND v.source_id = s.{key_column} "
                     f"AND v.last_updated <> s.{version} AND v.load_order <= :load_order",
                     name=name, load_order=load_order)
            conn.run(f"UPDATE {stage} s SET etl_versioned = true FROM {versions} v "  # nosec B608
                     f"WHERE v.table_name = :name AND v.source_id = s.{key_column}", name=name)
        conn.run(f"INSERT INTO {versions} (table_name, source_id, last_updated, load_order) "  # nosec B608
                 f"SELECT :name, s.{key_column}, s.{version}, :load_order FROM {stage} s "
                 "WHERE s.etl_versioned IS NULL", name=name, load_order=load_order)
    return written


def _staged_range(conn: Any, stage: str, column: str) -> Tuple[Any, Any]:
    """(least, greatest) value of ``column`` (quoted) in ``stage``; (None, None) when it holds none."""
    low, high = conn.run(f"SELECT min(s.{column}), max(s.{column}) FROM {stage} s")[0]  # nosec B608
    return low, high


def _keys_unseen(conn: Any, name: str, stage: str, key_column: str, key: str, versioned: bool) -> bool:
    """True when the table ``name`` (and, ``versioned``, etl_dimension_version) holds no key between the
    least and the greatest staged key (quoted ``key_column`` of ``stage``, ``key`` of the table): one scan of
    the stage and one index probe each, against a join per staged row."""
    low, high = _staged_range(conn, stage, key_column)
    if low is None:
        return True
    held = conn.run(f"SELECT EXISTS (SELECT 1 FROM {identifier(name)} "  # nosec B608
                    f"WHERE {key} BETWEEN :low AND :high)", low=low, high=high)[0][0]
    if not held and versioned:
        held = conn.run(f"SELECT EXISTS (SELECT 1 FROM {identifier(DIMENSION_VERSIONS)} "  # nosec B608
                        "WHERE table_name = :name AND source_id BETWEEN :low AND :high)",
                        name=name, low=low, high=high)[0][0]
    return not held


@dataclass
class FactMerge:
    """What ``merge_fact`` did to one fact table: ``inserted`` rows (None: nothing to do), ``parked``
    {source table: rows newly parked}, ``remarked``: the natural ids whose version already held was
    made current again (its load order moved to the batch's)."""
    inserted: Optional[int] = None
    parked: Dict[str, int] = dataclass_field(default_factory=dict)
    remarked: List[int] = dataclass_field(default_factory=list)
    distinct_ids: bool = False


def merge_fact(conn: Any, name: str, table: Optional[pa.Table], target: TargetTable, batch_id: str,
               staging: Optional[ParallelStaging] = None, load_order: int = 0) -> FactMerge:
    """Append a fact table's new versions with the batch's ``load_order``; return a FactMerge (its
    ``distinct_ids``: the rows appended hold each natural id at most once, ``ids_distinct``).

    The batch's rows are staged together with the rows parked by earlier batches (in etl_rejected_rows
    with row_data, not yet resolved; each keeps the load order of the batch that parked it, so a newer
    version loaded meanwhile stays current); staged rows whose dimension references the warehouse does
    not hold are (re-)parked there, the others are inserted (a version, natural id and last_updated,
    already held is not inserted again) and their parked records marked resolved by this batch. A held
    version the batch brings back while another version of its id is current (a row restored to an
    earlier version, which loads no row) is re-marked as current (``_remark_held``).
    """
    source, id_column = WAREHOUSE_SOURCES[name]
    rejected = identifier(REJECTED)
    parked_filter = "r.source_table = :source AND r.row_data IS NOT NULL AND r.resolved_batch_id IS NULL"
    parked = conn.run(f"SELECT count(*) FROM {rejected} r WHERE {parked_filter}",  # nosec B608
                      source=source)[0][0]
    if (table is None or not table.num_rows) and not parked:
        return FactMerge()
    stage = _stage(conn, name, table, staging)
    schema = WAREHOUSE_SCHEMAS[name]
    source_columns = ", ".join(identifier(field.name) for field in schema)
    order_column = identifier(LOAD_ORDER_COLUMN)
    if parked:
        # A record parked before the load order existed has none in row_data: its parking batch's, if
        # the ledger knows it, else 0 (loaded before everything since).
        parked_columns = ", ".join(f"p.{identifier(field.name)}" for field in schema)
        conn.run(f"INSERT INTO {stage} ({source_columns}, {order_column}) "  # nosec B608
                 f"SELECT {parked_columns}, coalesce(p.{order_column}, l.load_order, 0) "
                 f"FROM {rejected} r LEFT JOIN {identifier(LEDGER)} l ON l.batch_id = r.batch_id "
                 f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{stage}, r.row_data) p "
                 f"WHERE {parked_filter}", source=source)
        conn.run(f"UPDATE {rejected} r SET resolved_batch_id = :batch_id "  # nosec B608
                 f"WHERE {parked_filter}", source=source, batch_id=batch_id)
    target_columns = ", ".join(identifier(target.names[field.name]) for field in schema)
    # A version already held (same natural id, last_updated and values) is left as it is: taken out of
    # the stage, not ON CONFLICT DO NOTHING (speculative insertion costs ~0.55 s against ~0.35 s for
    # fact_payment's 158k rows at scale 10). A staged row whose stamp is held with other values (an
    # update that kept its stamp) stays in the stage: a new version (docs/DESIGN.md, "A version is its
    # stamp and its values"). DISTINCT ON keeps one row of a version (stamp and values) staged twice (a
    # parked row delivered again: the later order); a parked version and the batch's fix of it under the
    # same stamp are two versions, each with its own order (docs/RELIABILITY.md defect 12). Rows are
    # inserted in version order, so of one batch's versions of an id the later stamped gets the greater
    # record id, as the current views order them.
    version = (id_column, "last_updated_date", "last_updated_time")
    held = held_condition(name, target, version)
    versions = ", ".join(identifier(column) for column in version
                         + tuple(field.name for field in schema if field.name not in version))
    staged_order = f"coalesce(s.{order_column}, :load_order)"
    remarked: List[int] = []
    # A stage of the batch's rows alone, each version once and in version order (as the transform writes
    # them): the DISTINCT ON would keep every row in the order they are, and its sort is left out (~0.2 s
    # per 500k rows; issue 24).
    # Identifiers are allow-listed catalogue names, quoted.
    if not parked and in_version_order(table, version):
        select = f"SELECT {source_columns}, {staged_order} FROM {stage} s"  # nosec B608
    else:
        select = (f"SELECT DISTINCT ON ({versions}) {source_columns}, {staged_order} "  # nosec B608
                  f"FROM {stage} s ORDER BY {versions}, {staged_order} DESC")

    def append() -> int:
        # The versions held are taken out of the stage first, with the table as it is: never an
        # INSERT INTO t ... WHERE NOT EXISTS (... t ...) (see merge_table: quadratic on a table whose
        # statistics say empty).
        remarked[:] = _remark_held(conn, name, stage, target, held, staged_order, load_order)
        conn.run(f"INSERT INTO {identifier(name)} ({target_columns}, {order_column}) {select}",  # nosec B608
                 load_order=load_order)
        return conn.row_count

    if target.references and checked_at_once(conn, name):
        # Dangling references are rare: append first and let the foreign keys find them (one set-wise
        # validation, or the row-by-row checks), and only when they do, undo the append, park the
        # dangling rows and append the rest. Saves an anti-join per reference on every batch (0.35 s
        # of a scale-10 load).
        conn.run("SAVEPOINT fact_append")
        try:
            inserted, newly_parked = append(), 0
        except (ForeignKeyViolationError, pg8000.exceptions.DatabaseError) as err:
            if not is_foreign_key_violation(err):
                raise
            conn.run("ROLLBACK TO SAVEPOINT fact_append")
            logger.info("dangling references: parking them before the append", table=name)
            newly_parked = _park_dangling(conn, stage, target, source, id_column, batch_id, load_order,
                                          None if parked else table)
            inserted = append()
        else:
            conn.run("RELEASE SAVEPOINT fact_append")
    else:
        newly_parked = _park_dangling(conn, stage, target, source, id_column, batch_id, load_order,
                                      None if parked else table)
        inserted = append()
    if parked:
        logger.info("parked rows retried", table=name, parked=parked)
    return FactMerge(inserted, {source: newly_parked} if newly_parked else {}, list(remarked),
                     distinct_ids=not parked and ids_distinct(table, id_column))


def ids_distinct(table: Optional[pa.Table], id_column: str) -> bool:
    """True when ``table`` (a batch's fact rows) holds each value of ``id_column`` at most once, NULL
    never: the rows a batch of it appends (a subset: held versions and dangling rows are taken out) are
    then one per id, and the rollups need not sort them to find each id's latest (a backfill's batch:
    ~0.3 s per 500k rows; issue 24, fifth pass)."""
    if table is None or not table.num_rows:
        return True
    ids = table[id_column]
    return not ids.null_count and pc.count_distinct(ids).as_py() == table.num_rows


def in_version_order(table: Optional[pa.Table], version: Tuple[str, ...]) -> bool:
    """True when ``table`` (a batch's fact rows) has no NULL in its ``version`` columns (natural id, date,
    time) and each row's version is strictly greater than the previous row's: no version twice, already
    in the order the append inserts them."""
    if table is None or not table.num_rows:
        return True
    columns = []
    for name in version:
        column = table[name]
        if column.null_count:
            return False
        if pa.types.is_date32(column.type):
            column = column.cast(pa.int32())
        elif pa.types.is_time(column.type):
            column = column.cast(pa.int64())
        values = column.to_numpy()
        columns.append((values[1:], values[:-1]))
    greater = np.zeros(table.num_rows - 1, dtype=bool)
    equal = np.ones(table.num_rows - 1, dtype=bool)
    for later, earlier in columns:
        greater |= equal & (later > earlier)
        equal &= later == earlier
    return bool(greater.all())


def held_condition(name: str, target: TargetTable, version: Tuple[str, ...]) -> str:
    """SQL true when the fact row ``f`` of ``name`` (spelled as ``target`` says) is the staged row ``s``'s
    version: the same ``version`` columns
    (natural id and stamp; an equality join on the version index) and the same values in every other
    column (NULL-safe: ``IS NOT DISTINCT FROM``). A blank-padded warehouse column (``target.padded``) is
    compared as ``bpchar`` (trailing blanks aside): it cannot hold them, and a re-read row must not look
    changed (docs/RELIABILITY.md defect 17)."""
    same_key = " AND ".join(f"f.{identifier(target.names[column])} = s.{identifier(column)}"
                            for column in version)
    values = [field.name for field in WAREHOUSE_SCHEMAS[name] if field.name not in version]
    held = f"({', '.join(f'f.{identifier(target.names[column])}' for column in values)})"
    staged = f"({', '.join(_staged_value(column, target) for column in values)})"
    return f"{same_key} AND {held} IS NOT DISTINCT FROM {staged}"


def _staged_value(column: str, target: TargetTable) -> str:
    """The staged column ``column`` as ``held_condition`` compares it with the warehouse's."""
    if column in target.padded:
        return f"CAST(s.{identifier(column)} AS bpchar)"
    return f"s.{identifier(column)}"


def _remark_held(conn: Any, name: str, stage: str, target: TargetTable, held: str, staged_order: str,
                 load_order: int) -> List[int]:
    """Take the versions ``name`` holds already out of ``stage``; those that are not their id's current
    version get the staged row's load order when it is greater (the source went back to a version loaded
    before: a row restored, or updated back to earlier values with an earlier stamp). Returns the ids
    re-marked. A held version that is current (the ingest's overlap reading it again) is not written.

    The probe reads only the table's versions whose natural id lies between the least and the greatest
    staged id (the version index's range): a backfill's batch of new ids reads the few versions at the
    edge of its range, not every version held (issue 24, third pass: the probe grew with the warehouse)."""
    source, id_column = WAREHOUSE_SOURCES[name]
    record = identifier(FACT_SOURCES[name].record_column)
    fact, order_column = identifier(name), identifier(LOAD_ORDER_COLUMN)
    fact_id = identifier(target.names[id_column])
    low, high = _staged_range(conn, stage, identifier(id_column))
    # The DELETE reads only the staged ids up to the greatest id held in the staged range (one index
    # probe): a backfill's batch of new ids overlaps what the warehouse holds at its lower edge, if at
    # all; with no version held in the range the DELETE is left out (issue 24, fifth pass: the DELETE
    # hashed the whole stage, ~0.4 s per 500k rows).
    if low is not None:
        high = conn.run(f"SELECT max({fact_id}) FROM {fact} "  # nosec B608
                        f"WHERE {fact_id} BETWEEN :low AND :high", low=low, high=high)[0][0]
    if low is None or high is None:
        return []
    ranked = ", ".join(f"{{0}}.{identifier(target.names[column])}"
                       for column in ("last_updated_date", "last_updated_time"))
    newer = f"(n.{order_column}, {ranked.format('n')}) > (f.{order_column}, {ranked.format('f')})"
    rows = conn.run(
        f"WITH held AS (DELETE FROM {stage} s USING {fact} f WHERE {held} "  # nosec B608
        f"AND f.{fact_id} BETWEEN :low AND :high AND s.{identifier(id_column)} BETWEEN :low AND :high "
        f"RETURNING f.{record} AS record_id, {staged_order} AS load_order), "
        "brought AS (SELECT record_id, max(load_order) AS load_order FROM held GROUP BY record_id) "
        f"UPDATE {fact} f SET {order_column} = b.load_order FROM brought b "
        f"WHERE f.{record} = b.record_id AND b.load_order > f.{order_column} "
        f"AND EXISTS (SELECT 1 FROM {fact} n WHERE n.{fact_id} = f.{fact_id} AND {newer}) "
        f"RETURNING f.{fact_id}", load_order=load_order, low=low, high=high)
    return sorted({row[0] for row in rows})


def _all_held(conn: Any, values: Any, dimension: str, dimension_column: str) -> bool:
    """True when ``values`` (a pyarrow column: a fact's references to ``dimension``) has no NULL and
    at most PROBE_MAX_DISTINCT distinct values, each of which ``dimension`` holds in
    ``dimension_column`` (its key: one index probe per distinct value). False: not shown, check the rows."""
    if values.null_count or not (pa.types.is_integer(values.type) or pa.types.is_date(values.type)):
        return False
    distinct = pc.unique(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    if len(distinct) > PROBE_MAX_DISTINCT:
        return False
    if not len(distinct):
        return True
    cast = "date[]" if pa.types.is_date(values.type) else "bigint[]"
    found = conn.run(f"SELECT count(*) FROM {identifier(dimension)} "  # nosec B608
                     f"WHERE {identifier(dimension_column)} = ANY(CAST(:values AS {cast}))",
                     values=distinct.to_pylist())[0][0]
    return found == len(distinct)


def _within_staged(conn: Any, stage: str, column: str, dimension_column: str) -> Tuple[str, Dict[str, Any]]:
    """(`` AND d.<dimension_column> BETWEEN :low AND :high``, its parameters: the least and the greatest
    staged value of ``column``), or ("", {}) when the stage holds none (every value NULL, or no row).
    The anti-join then reads the dimension's rows in the batch's range (an index range), not the whole
    table: a backfill's batch references the rows of its own slice (issue 24: the hash of every
    dim_transaction row grew with the warehouse). No staged value lies outside the range, so no row is
    found dangling that was not before."""
    low, high = _staged_range(conn, stage, identifier(column))
    if low is None:
        return "", {}
    return f" AND d.{identifier(dimension_column)} BETWEEN :low AND :high", {"low": low, "high": high}


def _park_dangling(conn: Any, stage: str, target: TargetTable, source: str, id_column: str, batch_id: str,
                   load_order: int = 0, table: Optional[pa.Table] = None) -> int:
    """Move the staged rows whose dimension references the warehouse does not hold into
    etl_rejected_rows (with row_data, to be retried, carrying the row's load order: ``load_order`` for
    the batch's own rows); return how many were newly parked.

    ``table``: the batch's rows, when the stage holds exactly those (no parked rows staged with them):
    a reference column whose distinct values the dimension all holds (``_all_held``: one index probe per
    distinct value) cannot dangle, and its anti-join over the stage is skipped (issue 24, third pass: the
    dates, currencies, staff... of a 2M-row batch cost ~17 scans of the stage per batch)."""
    rejected = identifier(REJECTED)
    newly_parked = 0
    stamp = "(s.last_updated_date + s.last_updated_time)::timestamp(3)"
    for column, dimension, dimension_column in target.references:
        if table is not None and column in table.column_names \
                and _all_held(conn, table[column], dimension, dimension_column):
            continue
        reason = f"references {dimension} ' || s.{identifier(column)}::text || ', which the warehouse " \
                 "does not hold (its source row was rejected or not delivered); parked until it arrives"
        within, bounds = _within_staged(conn, stage, column, dimension_column)
        rows = conn.run(
            f"WITH dangling AS (DELETE FROM {stage} s WHERE NOT EXISTS ("  # nosec B608
            f"SELECT 1 FROM {identifier(dimension)} d "
            f"WHERE d.{identifier(dimension_column)} = s.{identifier(column)}{within}) "
            f"RETURNING s.{identifier(id_column)} AS source_id, {stamp} AS last_updated, "
            f"'{reason}' AS reason, s.{identifier(column)}::text AS value, to_jsonb(s) || "
            f"jsonb_build_object('{LOAD_ORDER_COLUMN}', coalesce(s.{identifier(LOAD_ORDER_COLUMN)}, "
            ":load_order)) AS row_data) "
            f"INSERT INTO {rejected} AS r (source_table, source_id, last_updated, column_name, reason, "
            "value, batch_id, row_data, value_key) "
            "SELECT DISTINCT ON (source_id, last_updated, value_key) :source, source_id, last_updated, "
            ":column, reason, value, :batch_id, row_data, value_key "
            f"FROM (SELECT *, {PARKED_VALUE_KEY} AS value_key FROM dangling) d "
            # one record per version (stamp and values): of a version staged twice (a parked row
            # delivered again), the later loaded order; two versions of one stamp are two records
            f"ORDER BY source_id, last_updated, value_key, (row_data ->> '{LOAD_ORDER_COLUMN}')::bigint DESC "
            "ON CONFLICT (source_table, source_id, last_updated, value_key) DO UPDATE SET "
            "resolved_batch_id = NULL, reason = EXCLUDED.reason, row_data = EXCLUDED.row_data "
            "RETURNING (xmax = 0) AS inserted, source_id, reason",
            source=source, column=column, batch_id=batch_id, load_order=load_order, **bounds)
        for number, (inserted, source_id, text) in enumerate(rows):
            if inserted:
                newly_parked += 1
                if number < MAX_REJECTED_LOG_LINES:
                    _log_rejected(batch_id, source, source_id, column, text)
    return newly_parked
