"""Hard deletes through the transform: the deleted keys an ingest batch names go on to the processed
batch, and leave the transform's snapshots.

A deleted counterparty or staff member must leave the snapshots (address, counterparty, department,
staff) so that a later change to its address or department does not re-emit it as if it still
existed: the warehouse would take that for a re-insert. The snapshot tables a batch's deletes changed
are written as new snapshots like any other change.
"""
import pyarrow as pa
import pyarrow.compute as pc

from utils.aws.objects import read_parquet_table
from utils.catalog.source import PRIMARY_KEYS, check_source_table
from utils.errors import CorruptFileError
from utils.ingest.deletes import DELETED_SCHEMA


def read_deleted(s3_client, bucket, manifest, manifest_key):
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


def drop_deleted(snapshots, deleted):
    """(snapshots without the deleted rows, names of the snapshots that lost rows)."""
    kept, changed = dict(snapshots), []
    for name, table in snapshots.items():
        ids = deleted.filter(pc.equal(deleted["source_table"], name))["source_id"]
        if not len(ids) or table is None:
            continue
        gone = pc.is_in(table[PRIMARY_KEYS[name]], value_set=ids.combine_chunks())
        if pc.any(gone).as_py():
            kept[name] = table.filter(pc.invert(gone))
            changed.append(name)
    return kept, changed


def deleted_entry(deleted, key):
    """The processed manifest's ``deleted`` entry for the file at ``key``."""
    counts = pa.TableGroupBy(deleted, "source_table").aggregate([("source_id", "count")])
    return {"key": key, "rows": deleted.num_rows,
            "tables": dict(zip(counts["source_table"].to_pylist(), counts["source_id_count"].to_pylist()))}
