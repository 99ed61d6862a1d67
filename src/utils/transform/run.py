"""The transform stage: ingest batches -> star-schema Parquet in the processed bucket.

One run (``run_transform``):
1. validate the event (the ingest output: ``{source_table: file_key}``; only logged);
2. read ``_state/transform.json`` (with its ETag) and ``_state/ingest.json``; walk the ingest
   manifests back through ``prev_manifest_key`` to the last one already transformed;
3. for each pending ingest batch, oldest first: read its Parquet files (schema-checked), read the
   snapshots named by the previous processed manifest, build the warehouse rows
   (``utils.transform.star.build_warehouse_batch``), write one Parquet file per warehouse table, the
   changed snapshots and the processed manifest (all immutable keys at the ingest batch time), then
   advance the transform state pointer (CAS).

A retry after a crash rewrites exactly the same objects (the output is a pure function of immutable
inputs), so an object already present with identical bytes is accepted; different bytes mean a
conflicting run and raise StateConflictError.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import boto3
import pyarrow as pa

from utils.aws.layout import PROCESSED_DELETED_PREFIX, PROCESSED_MANIFESTS, REJECTED_PREFIX, SNAPSHOTS_PREFIX
from utils.aws.manifests import (processed_manifest_bytes, read_deleted, read_ingest_manifest,
                                 read_processed_manifest, walk_manifests)
from utils.aws.objects import parquet_bytes, read_parquet_table, write_once
from utils.aws.state import read_ingest_state, read_transform_state, write_transform_state
from utils.catalog.formats import empty_rejected
from utils.catalog.source import LANDING_SCHEMAS, SOURCE_TABLES, check_source_table, optional_columns
from utils.catalog.warehouse import SNAPSHOT_TABLES
from utils.config import load_settings
from utils.contracts import (FileEntry, IngestManifest, ProcessedManifest, TransformEvent,
                             TransformResult)
from utils.errors import CorruptFileError, InvalidEventError
from utils.format_time import parse_time
from utils.generate_file_key import generate_file_key
from utils.logger import get_logger
from utils.transform.deletes import deleted_entry, drop_deleted, source_ids_entry
from utils.transform.quarantine import split_future_rows
from utils.transform.star import build_warehouse_batch

STAGE = "transform"
# A pending ingest batch: (its manifest key, its manifest).
PendingBatch = Tuple[str, IngestManifest]
logger = get_logger(STAGE)


def parse_event(event: Any) -> TransformEvent:
    """Check the transform event: the ingest output, a dict ``{source_table: file_key}``.

    Raises InvalidEventError for a non-dict (or non-string keys) and UnknownTableError for a key
    that is not a source table. The event only says what ingest landed: the manifests are the truth.
    """
    if not isinstance(event, dict):
        raise InvalidEventError(f"transform event must be a JSON object, got {type(event).__name__}")
    for name, key in event.items():
        check_source_table(name)
        if not isinstance(key, str):
            raise InvalidEventError(f"transform event: file key of {name!r} must be a string")
    return event


def run_transform(event: Any, s3_client: Any = None) -> TransformResult:
    """Transform every pending ingest batch; return ``{"batches": [...], "tables": {table: rows}}``.

    Raises on any failure (the handler's stage_handler logs it at CRITICAL).
    """
    parse_event(event)
    logger.info("transform started", ingest_files=event)
    settings = load_settings()
    s3_client = s3_client or boto3.client("s3")
    return transform_pending(s3_client, settings.ingest_bucket, settings.processed_bucket)


def transform_pending(s3_client: Any, ingest_bucket: str, processed_bucket: str,
                      take: Optional[Callable[[List[PendingBatch]], List[PendingBatch]]] = None
                      ) -> TransformResult:
    """Transform, oldest first, every ingest batch after the one the transform state names.

    ``take``: given the pending [(manifest key, manifest)], returns the oldest ones this invocation
    transforms (a rebuild's bound, ``utils.rebuild.rounds``); when it leaves some, ``more_waiting``."""
    state, etag = read_transform_state(s3_client, processed_bucket)
    ingest_state, _ = read_ingest_state(s3_client, ingest_bucket)
    pending = pending_ingest_batches(s3_client, ingest_bucket, ingest_state.get("manifest_key"),
                                     state.get("ingest_manifest_key"))
    result: TransformResult = {"batches": [], "tables": {}}
    taken = take(pending) if take else pending
    if ingest_state.get("more_waiting") or len(taken) < len(pending):
        # the ingest cut its last batch (utils/ingest/bounded.py), or this invocation's bound left some:
        # the state machine runs another round
        result["more_waiting"] = True
    pending = taken
    if not pending:
        logger.warning("no new ingest batches", last_transformed=state.get("ingest_manifest_key"))
        return result
    processed_key = state.get("manifest_key")
    previous = read_processed_manifest(s3_client, processed_bucket, processed_key) if processed_key else None
    buckets = Buckets(s3_client, ingest_bucket, processed_bucket)
    for ingest_key, ingest_manifest in pending:
        manifest_key, manifest = transform_batch(buckets, ingest_key, ingest_manifest, processed_key,
                                                 previous)
        etag = write_transform_state(s3_client, processed_bucket,
                                     {"manifest_key": manifest_key, "ingest_manifest_key": ingest_key}, etag)
        logger.info("state advanced", manifest_key=manifest_key, ingest_manifest_key=ingest_key)
        result["batches"].append(manifest["batch_id"])
        for name, entry in manifest["tables"].items():
            result["tables"][name] = result["tables"].get(name, 0) + entry["rows"]
        processed_key, previous = manifest_key, manifest
    return result


def pending_ingest_batches(s3_client: Any, bucket: str, latest_key: Optional[str], done_key: Optional[str]
                           ) -> List[PendingBatch]:
    """[(manifest key, manifest)] of the ingest batches after ``done_key``, oldest first.

    Walks ``prev_manifest_key`` links back from ``latest_key``. Raises CorruptFileError when the
    chain ends without reaching ``done_key`` (the state names a batch that is not in the chain).
    """
    chain, end = walk_manifests(
        lambda key: read_ingest_manifest(s3_client, bucket, key),
        latest_key, until_key=done_key)
    if done_key and end != done_key:
        raise CorruptFileError(
            f"ingest batch {done_key} named in _state/transform.json is not in the ingest manifest chain",
            key=done_key)
    return chain


def read_snapshots(s3_client: Any, bucket: str, processed_manifest: Optional[ProcessedManifest]
                   ) -> Dict[str, pa.Table]:
    """{table: pyarrow Table} of the snapshots a processed manifest names (none: {})."""
    if not processed_manifest:
        return {}
    names = processed_manifest.get("snapshots", {})
    return {name: read_parquet_table(s3_client, bucket, key, name, LANDING_SCHEMAS[name],
                                     missing_as_null=optional_columns(name))
            for name, key in names.items() if name in SNAPSHOT_TABLES}


@dataclass(frozen=True)
class Buckets:
    """Where the transform reads (``ingest``) and writes (``processed``), through ``s3_client``."""
    s3_client: Any
    ingest: str
    processed: str


def transform_batch(buckets: "Buckets", ingest_key: str, ingest_manifest: IngestManifest,
                    prev_processed_key: Optional[str], prev_processed_manifest: Optional[ProcessedManifest]
                    ) -> Tuple[str, ProcessedManifest]:
    """Transform one ingest batch; write its files and manifest; return (manifest key, manifest)."""
    s3_client, ingest_bucket, processed_bucket = buckets.s3_client, buckets.ingest, buckets.processed
    batch_time = parse_time(ingest_manifest["batch_time"])
    batch = {name: read_parquet_table(s3_client, ingest_bucket, entry["key"], name, LANDING_SCHEMAS[name],
                                      manifest_key=ingest_key, missing_as_null=optional_columns(name))
             for name, entry in ingest_manifest["tables"].items()}
    # Dependency order keeps logs and outputs stable.
    batch = {name: batch[name] for name in SOURCE_TABLES if name in batch}
    deleted = read_deleted(s3_client, ingest_bucket, ingest_manifest, ingest_key)
    snapshots, pruned = drop_deleted(read_snapshots(s3_client, processed_bucket, prev_processed_manifest),
                                     deleted)
    batch, future = _split_future(batch, ingest_manifest)
    warehouse, new_snapshots, rejected = build_warehouse_batch(batch, snapshots)
    rejected = pa.concat_tables([future, rejected])
    for name in pruned:
        new_snapshots.setdefault(name, snapshots[name])
    tables: Dict[str, FileEntry] = {}
    for name, table in warehouse.items():
        key = generate_file_key(name, batch_time)
        _write_once(s3_client, processed_bucket, key, parquet_bytes(table))
        tables[name] = {"key": key, "rows": table.num_rows}
        logger.info("table transformed", table=name, rows=table.num_rows, key=key)
    snapshot_keys = dict(prev_processed_manifest.get("snapshots", {}) if prev_processed_manifest else {})
    for name, table in new_snapshots.items():
        key = generate_file_key(f"{SNAPSHOTS_PREFIX}/{name}", batch_time)
        _write_once(s3_client, processed_bucket, key, parquet_bytes(table))
        snapshot_keys[name] = key
    batch_id = ingest_manifest.get("batch_id") or f"{batch_time:%Y%m%dT%H%M%S%f}"
    manifest: ProcessedManifest = {
        "batch_id": batch_id, "batch_time": ingest_manifest["batch_time"], "ingest_manifest_key": ingest_key,
        "prev_manifest_key": prev_processed_key, "tables": tables, "snapshots": snapshot_keys}
    if rejected.num_rows:
        key = generate_file_key(REJECTED_PREFIX, batch_time)
        _write_once(s3_client, processed_bucket, key, parquet_bytes(rejected))
        manifest["rejected"] = {"key": key, "rows": rejected.num_rows}
        # One ERROR line per row is written by the load, when the row is recorded in etl_rejected_rows.
        logger.warning("rows set aside for quarantine", batch_id=batch_id, rows=rejected.num_rows, key=key)
    source_ids = source_ids_entry(batch)
    if source_ids:
        manifest["source_ids"] = source_ids  # closes re-inserted deletions (utils.transform.deletes)
    if deleted.num_rows:
        key = generate_file_key(PROCESSED_DELETED_PREFIX, batch_time)
        _write_once(s3_client, processed_bucket, key, parquet_bytes(deleted))
        manifest["deleted"] = deleted_entry(deleted, key)
        logger.info("deletes passed on", batch_id=batch_id, rows=deleted.num_rows, key=key)
    manifest_key = generate_file_key(PROCESSED_MANIFESTS, batch_time, "json")
    _write_once(s3_client, processed_bucket, manifest_key, processed_manifest_bytes(manifest))
    logger.info("manifest written", key=manifest_key, tables=len(tables))
    return manifest_key, manifest


def _split_future(batch: Mapping[str, pa.Table], ingest_manifest: IngestManifest
                  ) -> Tuple[Dict[str, pa.Table], pa.Table]:
    """(batch without its future rows, their rejected records): the rows at or after each table's
    ``future_from`` (``utils.transform.quarantine.split_future_rows``)."""
    kept, rejected = {}, [empty_rejected()]
    for name, table in batch.items():
        future_from = ingest_manifest["tables"][name].get("future_from")
        kept[name], future = split_future_rows(name, table, future_from)
        rejected.append(future)
    return kept, pa.concat_tables(rejected)


def _write_once(s3_client: Any, bucket: str, key: str, body: bytes) -> None:
    """``write_once``, saying so when an earlier attempt had written the same bytes."""
    if not write_once(s3_client, bucket, key, body):
        logger.info("object already written by an earlier attempt", key=key)
