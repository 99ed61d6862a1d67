"""Batch manifests: the JSON objects that name a batch's files and link to the previous batch.

Both buckets chain their manifests through ``prev_manifest_key`` (newest to oldest); ``walk_manifests``
is the one walk along such a chain, used by the transform (ingest manifests), the load (processed
manifests), ``totesys pending`` (the saved local state) and the tests.

The manifests' types are ``utils.contracts.IngestManifest`` and ``ProcessedManifest``: every stage reads
them with ``read_ingest_manifest``/``read_processed_manifest`` and writes them with
``write_ingest_manifest``/``processed_manifest_bytes``. The files a manifest names in the formats of
``utils.catalog.formats`` are read here too (``read_deleted``, ``read_source_ids``).
"""
import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, TypeVar, cast

import pyarrow as pa
import pyarrow.compute as pc

from utils.aws.objects import read_json, read_parquet_table, write_to_s3
from utils.catalog.formats import DELETED_SCHEMA
from utils.catalog.source import check_source_table
from utils.catalog.warehouse import check_warehouse_table
from utils.contracts import IngestManifest, ProcessedManifest
from utils.errors import CorruptFileError

M = TypeVar("M", bound=Mapping[str, Any])


def read_manifest(s3_client: Any, bucket_name: str, key: str, check_table: Callable[[str], str],
                  required: str) -> Dict[str, Any]:
    """Read a batch manifest and check its shape: the string field ``required`` is present, and
    ``tables`` maps names accepted by ``check_table`` to entries holding a file ``key``.
    Raises CorruptFileError naming the manifest (or the check's own error for an unknown table)."""
    manifest = read_json(s3_client, bucket_name, key)
    tables = manifest.get("tables")
    if not isinstance(manifest.get(required), str) or not isinstance(tables, dict):
        raise CorruptFileError(f"manifest {key} lacks {required} or tables", key=key)
    for name, entry in tables.items():
        check_table(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise CorruptFileError(f"manifest {key}: entry of {name!r} has no file key", key=key, table=name)
    return manifest


def read_ingest_manifest(s3_client: Any, bucket_name: str, key: str,
                         required: str = "batch_time") -> IngestManifest:
    """An ingest manifest (``read_manifest`` with the source tables' allow-list; ``required``: the string
    field it must hold, ``batch_time`` unless the reader needs another)."""
    return cast(IngestManifest, read_manifest(s3_client, bucket_name, key, check_source_table, required))


def read_processed_manifest(s3_client: Any, bucket_name: str, key: str) -> ProcessedManifest:
    """A processed manifest (``read_manifest`` with the warehouse tables' allow-list and ``batch_id``)."""
    return cast(ProcessedManifest,
                read_manifest(s3_client, bucket_name, key, check_warehouse_table, "batch_id"))


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The one JSON form of a manifest (sorted keys: a retry writes the same bytes)."""
    return json.dumps(manifest, sort_keys=True).encode()


def write_ingest_manifest(s3_client: Any, bucket_name: str, key: str, manifest: IngestManifest) -> None:
    """Write an ingest manifest at ``key`` (immutable: ``write_to_s3`` refuses an existing key)."""
    write_to_s3(s3_client, bucket_name, key, manifest_bytes(manifest))


def processed_manifest_bytes(manifest: ProcessedManifest) -> bytes:
    """The bytes of a processed manifest; the transform writes them with ``write_once`` (a retry after a
    crash rewrites the same bytes)."""
    return manifest_bytes(manifest)


def read_deleted(s3_client: Any, bucket: str, manifest: Mapping[str, Any], manifest_key: str) -> pa.Table:
    """The deleted keys (DELETED_SCHEMA) a manifest's ``deleted`` entry names (none: an empty table).

    Raises CorruptFileError naming the manifest for an entry without a file key, the object's own
    errors (CorruptFileError, SchemaMismatchError) for a missing or wrongly shaped file, and
    UnknownTableError for a source table outside the allow-list.
    """
    entry = manifest.get("deleted")
    if not entry:
        return DELETED_SCHEMA.empty_table()
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        raise CorruptFileError(f"manifest {manifest_key}: entry 'deleted' has no file key", key=manifest_key)
    deleted = read_parquet_table(s3_client, bucket, entry["key"], "deleted keys", DELETED_SCHEMA,
                                 manifest_key=manifest_key)
    for name in pc.unique(deleted["source_table"]).to_pylist():
        check_source_table(name)
    return deleted


def read_source_ids(manifest: Mapping[str, Any], manifest_key: str) -> Dict[str, List[int]]:
    """{source table: [ids]} from a processed manifest's ``source_ids`` entry (none: {}).

    Raises CorruptFileError naming the manifest for an entry that is not {table: [integer ids]}, and
    UnknownTableError for a source table outside the allow-list.
    """
    entry = manifest.get("source_ids") or {}
    if not isinstance(entry, dict):
        raise CorruptFileError(f"manifest {manifest_key}: entry 'source_ids' is not an object",
                               key=manifest_key)
    for name, ids in entry.items():
        check_source_table(name)
        if not isinstance(ids, list) or not all(type(i) is int for i in ids):
            raise CorruptFileError(f"manifest {manifest_key}: entry 'source_ids' of {name} is not a list of "
                                   "integer ids", key=manifest_key)
    return entry


def _never(key: str, manifest: Any) -> bool:
    return False


def walk_manifests(read: Callable[[str], M], head_key: Optional[str],
                   stop: Callable[[str, M], bool] = _never,
                   until_key: Optional[str] = None) -> Tuple[List[Tuple[str, M]], Optional[str]]:
    """Follow ``prev_manifest_key`` back from ``head_key``; return ``(chain, end)``.

    ``chain``: ``[(key, manifest)]`` of the manifests passed, OLDEST FIRST. The walk ends before
    ``until_key`` (not read), before the first manifest for which ``stop(key, manifest)`` holds (read,
    not in the chain), or after the oldest manifest (no ``prev_manifest_key``). ``end`` is the key it
    ended at: ``until_key``, the stopping manifest's key, or None. ``read(key)`` returns a manifest
    (it raises what it raises for a missing or corrupt one). Raises CorruptFileError (``key``) when a
    key comes round again: a chain that loops would never end.
    """
    chain: List[Tuple[str, M]] = []
    seen: Set[str] = set()
    key = head_key
    while key and key != until_key:
        if key in seen:
            raise CorruptFileError(f"manifest chain loops at {key}", key=key)
        seen.add(key)
        manifest = read(key)
        if stop(key, manifest):
            break
        chain.append((key, manifest))
        key = manifest.get("prev_manifest_key")
    chain.reverse()
    return chain, key or None
