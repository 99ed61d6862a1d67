"""What the landing zone says `verify` may expect: the loaded ingest batches and their bounds.

A batch is loaded when its id is in the warehouse's ``etl_load_ledger`` (a processed batch keeps its
ingest batch's id). The walk follows the ingest manifests back from ``_state/ingest.json``. Each source
table's bound is ``(high, snapshot)`` of the newest loaded batch that read it: the ingest state's own
entries when the state's batch is loaded (later runs with no changes advanced them), else the table's
entry in the newest loaded manifest that has one. A row stamped at or after ``high``, or written by a
transaction not finished before ``snapshot`` and stamped inside the overlap window, is in flight: the
next run takes it (the ingest's own rules, docs/DESIGN.md "Incremental extraction").
"""
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, List, Optional, Sequence, Set, Tuple

from pg8000.native import Connection

from utils.aws.manifests import read_ingest_manifest, walk_manifests
from utils.aws.objects import read_parquet_table
from utils.aws.state import read_ingest_state
from utils.catalog.formats import DELETED_SCHEMA
from utils.contracts import IngestManifest, IngestState
from utils.errors import CorruptFileError


@dataclass
class Landed:
    """``manifests``: [(key, manifest)] of the loaded ingest batches, oldest first; ``pending_manifests``:
    those of the ingest batches not loaded yet; ``bounds``: {source table: (high, snapshot)} (absent:
    nothing of that table is loaded, so every row of it is in flight)."""
    manifests: List[Tuple[str, IngestManifest]] = field(default_factory=list)
    pending_manifests: List[Tuple[str, IngestManifest]] = field(default_factory=list)
    bounds: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    state: IngestState = field(default_factory=lambda: IngestState())


def loaded_batch_ids(conn: Connection) -> Set[str]:
    """The batch ids in the warehouse's ledger (empty when the warehouse has no ledger yet)."""
    if conn.run("SELECT to_regclass('etl_load_ledger') IS NULL")[0][0]:
        return set()
    return {row[0] for row in conn.run("SELECT batch_id FROM etl_load_ledger")}


def read_landed(s3_client: Any, bucket: str, loaded_ids: Collection[str]) -> Landed:
    """Walk the ingest manifests; see the module docstring. Raises CorruptFileError for a missing or
    malformed manifest, as the transform would, and when the warehouse has loaded batches but none of
    them is in the bucket (the wrong bucket, or a warehouse another state folder loads: comparing would
    claim every fact version never landed)."""
    state, _ = read_ingest_state(s3_client, bucket)
    if not state.get("manifest_key") and loaded_ids:
        raise CorruptFileError(f"the landing zone s3://{bucket} has no ingest batch, yet the warehouse has "
                               f"loaded {len(loaded_ids)}: wrong bucket or state folder?",
                               key="_state/ingest.json")
    chain, _ = walk_manifests(
        lambda key: read_ingest_manifest(s3_client, bucket, key, required="batch_id"),
        state.get("manifest_key"))
    landed = Landed(state=state)
    for key, manifest in chain:
        if manifest["batch_id"] in loaded_ids:
            landed.manifests.append((key, manifest))
        else:
            landed.pending_manifests.append((key, manifest))
    if loaded_ids and not landed.manifests:
        raise CorruptFileError(f"the warehouse has loaded {len(loaded_ids)} batch(es), none of them from the "
                               f"landing zone s3://{bucket} ({len(chain)} batch(es)): wrong bucket or state "
                               "folder?", key="_state/ingest.json")
    landed.bounds = _bounds(state, landed.manifests, loaded_ids)
    return landed


def _bounds(state: IngestState, manifests: Sequence[Tuple[str, IngestManifest]], loaded_ids: Collection[str]
            ) -> Dict[str, Tuple[str, str]]:
    if state.get("batch_id") and state.get("batch_id") in loaded_ids:
        return {table: (entry["high"], entry["snapshot"]) for table, entry in state.get("tables", {}).items()}
    bounds: Dict[str, Tuple[str, str]] = {}
    for _, manifest in reversed(manifests):
        for table, entry in manifest["tables"].items():
            bounds.setdefault(table, (entry["high"], entry["snapshot"]))
    return bounds


def latest_loaded(landed: Landed) -> Optional[str]:
    """The id of the newest loaded batch, or None."""
    return landed.manifests[-1][1]["batch_id"] if landed.manifests else None


def pending_deleted(s3_client: Any, bucket: str, landed: Landed) -> Dict[str, Set[int]]:
    """{source table: set of ids} the ingest batches not loaded yet deleted (their ``_deleted`` files)."""
    found: Dict[str, Set[int]] = {}
    for key, manifest in landed.pending_manifests:
        entry = manifest.get("deleted")
        if entry:
            rows = read_parquet_table(s3_client, bucket, entry["key"], "_deleted", DELETED_SCHEMA, key)
            for table, row_id in zip(rows["source_table"].to_pylist(), rows["source_id"].to_pylist()):
                found.setdefault(table, set()).add(int(row_id))
    return found
