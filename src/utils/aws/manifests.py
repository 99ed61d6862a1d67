"""Batch manifests: the JSON objects that name a batch's files and link to the previous batch.

Both buckets chain their manifests through ``prev_manifest_key`` (newest to oldest); ``walk_manifests``
is the one walk along such a chain, used by the transform (ingest manifests), the load (processed
manifests), ``totesys pending`` (the saved local state) and the tests.
"""
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, TypeVar

from utils.aws.objects import read_json
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
