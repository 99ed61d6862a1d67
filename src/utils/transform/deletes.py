"""Hard deletes through the transform: the deleted keys an ingest batch names go on to the processed
batch, and leave the transform's snapshots.

A deleted counterparty or staff member must leave the snapshots (address, counterparty, department,
staff) so that a later change to its address or department does not re-emit it as if it still
existed: the warehouse would take that for a re-insert. The snapshot tables a batch's deletes changed
are written as new snapshots like any other change.

Re-inserts of source tables with no warehouse table of their own (department, folded into dim_staff):
the load closes a deletion when the batch brings a row built from that source id, which it cannot see
for such a table. The processed manifest's ``source_ids`` entry ({source table: [ids]}) names the ids
of the batch's rows of these tables, so the load closes their open deletions too (defect 5,
docs/RELIABILITY.md).
"""
from typing import Dict, List, Mapping, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from utils.catalog.source import PRIMARY_KEYS, SOURCE_TABLES
from utils.catalog.warehouse import WAREHOUSE_SOURCES
from utils.contracts import DeletedEntry

# Source tables no warehouse table is keyed on: their re-inserts reach the load only as ``source_ids``.
UNSEEN_SOURCES = tuple(name for name in SOURCE_TABLES
                       if name not in {source for source, _ in WAREHOUSE_SOURCES.values()})


def drop_deleted(snapshots: Mapping[str, Optional[pa.Table]], deleted: pa.Table
                 ) -> Tuple[Dict[str, Optional[pa.Table]], List[str]]:
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


def deleted_entry(deleted: pa.Table, key: str) -> DeletedEntry:
    """The processed manifest's ``deleted`` entry for the file at ``key``."""
    counts = pa.TableGroupBy(deleted, "source_table").aggregate([("source_id", "count")])
    return {"key": key, "rows": deleted.num_rows,
            "tables": dict(zip(counts["source_table"].to_pylist(), counts["source_id_count"].to_pylist()))}


def source_ids_entry(batch: Mapping[str, Optional[pa.Table]]) -> Dict[str, List[int]]:
    """The processed manifest's ``source_ids`` entry: {source table: sorted ids} of ``batch``'s rows
    ({source table: pyarrow Table}) of the UNSEEN_SOURCES tables; {} when it has none."""
    entry: Dict[str, List[int]] = {}
    for name in UNSEEN_SOURCES:
        table = batch.get(name)
        if table is not None and table.num_rows:
            entry[name] = sorted(pc.unique(table[PRIMARY_KEYS[name]].combine_chunks()).to_pylist())
    return entry
