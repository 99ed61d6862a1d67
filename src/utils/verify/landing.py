"""What the landing zone says `verify` may expect: the ingest batches loaded and not loaded yet.

A batch is loaded when its id is in the warehouse's ``etl_load_ledger`` (a processed batch keeps its
ingest batch's id). The walk follows the ingest manifests back from ``_state/ingest.json``. What the
batches not loaded yet bring, and what the next run will, is ``utils.verify.in_flight``'s.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

from utils.aws.manifests import read_ingest_manifest, walk_manifests
from utils.aws.objects import read_parquet_table
from utils.aws.state import read_ingest_state
from utils.catalog.formats import DELETED_SCHEMA
from utils.contracts import IngestManifest, IngestState
from utils.errors import CorruptFileError


@dataclass
class Landed:
    """``manifests``: [(key, manifest)] of the loaded ingest batches, oldest first; ``pending_manifests``:
    those of the ingest batches not loaded yet; ``state``: the ingest state pointer."""
    manifests: List[Tuple[str, IngestManifest]] = field(default_factory=list)
    pending_manifests: List[Tuple[str, IngestManifest]] = field(default_factory=list)
    state: IngestState = field(default_factory=lambda: IngestState())


def loaded_batch_ids(conn: Any) -> Set[str]:
    """The batch ids in the warehouse's ledger (empty when the warehouse has no ledger yet)."""
    if conn.run("SELECT to_regclass('etl_load_ledger') IS NULL")[0][0]:
        return set()
    return {row[0] for row in conn.run("SELECT batch_id FROM etl_load_ledger")}


def read_landed(s3_client: Any, bucket: str, loaded_ids: Set[str]) -> Landed:
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
    return landed


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
