"""Hard deletes in the warehouse: ``etl_deleted_rows``, written in the batch's own transaction.

A batch's deleted keys (the processed manifest's ``deleted`` entry, ``utils.transform.deletes``) are
recorded once each: the table's unique indexes (one open deletion per source row; one record per row and
batch) and ``ON CONFLICT DO NOTHING`` make a retry or a replay add nothing. Facts keep every version;
the ``current_*`` views leave out the ids with an open deletion; dimension rows stay (facts reference
them) and ``deleted_dimension_rows`` lists those whose source row is gone.

Re-inserts: before a batch's deletions are recorded, every open deletion of a source id for which the
batch brings a row (a fact version or a dimension row built from that source row) is closed with
``reinserted_batch_id`` = this batch, so the id shows again in the current views. A source table no
warehouse table is keyed on (department) names its batch rows' ids in the manifest's ``source_ids``
entry (``utils.transform.deletes``); those close the same way. The transform drops
deleted rows from its snapshots, so a parent's change never re-emits a deleted child as if it had come
back.
"""
from typing import Dict, List, Mapping, Optional, Set, Tuple

import pyarrow as pa
import pyarrow.compute as pc
from pg8000.native import Connection, identifier

from utils.catalog.warehouse import WAREHOUSE_SOURCES
from utils.db.copy_in import csv_stream
from utils.load.schema import DELETED
from utils.logger import get_logger

logger = get_logger("load")


def _batch_source_ids(tables: Mapping[str, Optional[pa.Table]], source_ids: Optional[Mapping[str, List[int]]],
                      sources: Optional[Set[str]] = None) -> List[Tuple[str, List[int]]]:
    """[(source table, ids)] of the batch: from its warehouse rows and its ``source_ids`` entry; with
    ``sources``, only those source tables (listing a million-row table's ids costs a second)."""
    pairs = [(source, ids) for source, ids in (source_ids or {}).items()
             if ids and (sources is None or source in sources)]
    for name, table in tables.items():
        if name in WAREHOUSE_SOURCES and table is not None and table.num_rows:
            source, id_column = WAREHOUSE_SOURCES[name]
            if sources is None or source in sources:
                pairs.append((source, pc.unique(table[id_column].combine_chunks()).to_pylist()))
    return pairs


def close_reinserted(conn: Connection, tables: Mapping[str, Optional[pa.Table]], batch_id: str,
                     source_ids: Optional[Mapping[str, List[int]]] = None) -> Dict[str, int]:
    """Close the open deletions of the source ids this batch's rows (``tables``: {warehouse table:
    pyarrow Table}) come from, and of ``source_ids`` ({source table: [ids]}, the manifest's entry for
    tables without a warehouse table); return {source table: deletions closed}."""
    deleted = identifier(DELETED)
    open_sources = {row[0] for row in conn.run(
        f"SELECT DISTINCT source_table FROM {deleted} WHERE reinserted_batch_id IS NULL")}  # nosec B608
    closed: dict[str, int] = {}
    if not open_sources:  # nothing to close (a backfill): the batch's ids are not listed
        return closed
    for source, ids in _batch_source_ids(tables, source_ids, open_sources):
        rows = conn.run(f"UPDATE {deleted} SET reinserted_batch_id = :batch_id "  # nosec B608
                        "WHERE source_table = :source AND reinserted_batch_id IS NULL "
                        "AND source_id = ANY(CAST(:ids AS integer[])) RETURNING source_id",
                        batch_id=batch_id, source=source, ids=ids)
        if rows:
            closed[source] = closed.get(source, 0) + len(rows)
            logger.info("deleted rows re-inserted", batch_id=batch_id, source_table=source,
                        source_ids=[row[0] for row in rows[:20]], rows=len(rows))
    return closed


def record_deleted(conn: Connection, deleted_keys: pa.Table, tables: Mapping[str, Optional[pa.Table]],
                   batch_id: str, source_ids: Optional[Mapping[str, List[int]]] = None) -> Dict[str, int]:
    """Close re-inserted deletions (``close_reinserted``: ``tables`` and ``source_ids``), then record
    this batch's deleted keys (DELETED_SCHEMA table) in etl_deleted_rows, inside the caller's
    transaction. Returns {source table: deletions newly recorded} (a deletion already recorded counts
    nothing)."""
    close_reinserted(conn, tables, batch_id, source_ids)
    if not deleted_keys.num_rows:
        return {}
    conn.run("CREATE TEMPORARY TABLE stage_deleted (source_table text, source_id integer) ON COMMIT DROP")
    conn.run("COPY stage_deleted (source_table, source_id) FROM STDIN WITH (FORMAT csv)",
             stream=csv_stream(deleted_keys))
    rows = conn.run(
        f"INSERT INTO {identifier(DELETED)} (source_table, source_id, batch_id) "  # nosec B608
        "SELECT source_table, source_id, :batch_id FROM stage_deleted ON CONFLICT DO NOTHING "
        "RETURNING source_table", batch_id=batch_id)
    counts: dict[str, int] = {}
    for (source,) in rows:
        counts[source] = counts.get(source, 0) + 1
    if counts:
        logger.info("deleted rows recorded", batch_id=batch_id, deleted=counts)
    return counts
