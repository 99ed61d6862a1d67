"""Hard deletes in totesys, detected by comparing primary-key sets (no CDC, no scan of history).

Each run, inside the ingest's snapshot transaction (every connection of the run sees the same
snapshot), the current primary keys of every table the run reads are copied out
(as runs of consecutive keys, ``keys_sql``) and compared with the previous run's key set of
that table: a compact object in the ingest bucket, ``_keys/<table>/yyyy/mm/dd/hhmmssffffff.parquet``
(one sorted int32 column ``id``), named by the table's entry ``keys`` in the ingest state pointer.
Keys in the previous set and not in the current one were deleted; they travel with the batch in
``_deleted/yyyy/mm/dd/hhmmssffffff.parquet`` (``utils.catalog.formats.DELETED_SCHEMA``), named by the
ingest manifest's ``deleted`` entry ``{"key", "rows", "tables": {table: n}}``.

Exactly once: the key-set objects and the deleted-keys file are written before the manifest and the
state pointer (CAS). A run that dies before the pointer advances leaves them as orphans: the next run
compares with the same previous key set and detects the same deletes again. The first run of a table
(no ``keys`` in its state entry) records its key set and detects nothing.
"""
import io
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Collection, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pg8000.native import Connection, identifier

from utils.aws.objects import read_parquet_table, write_to_s3
from utils.catalog.formats import DELETED_SCHEMA, KEY_SCHEMA
from utils.catalog.source import PRIMARY_KEYS, check_source_table
from utils.contracts import DeletedEntry, HeldDeletes
from utils.generate_file_key import generate_file_key
from utils.ingest.delete_guard import hold
from utils.ingest.repair import RepairOptions
from utils.logger import get_logger

from utils.aws.layout import DELETED_PREFIX, KEYS_PREFIX  # noqa: F401 - re-exported

logger = get_logger("ingest")


@dataclass
class Detection:
    """What one run found: ``keys`` {table: key of its key-set object} for every table the run read
    (a new object where the set changed, else the previous one), ``deleted`` {table: sorted int32
    ids}, only tables with deletions; ``held`` {table: {"rows", "table_rows"}}: deletions the mass-delete
    guard held (``utils.ingest.delete_guard``)."""
    keys: Dict[str, str] = field(default_factory=dict)
    deleted: Dict[str, np.ndarray] = field(default_factory=dict)
    held: Dict[str, HeldDeletes] = field(default_factory=dict)

    @property
    def deleted_rows(self) -> int:
        return sum(len(ids) for ids in self.deleted.values())


def keys_sql(table: str) -> str:
    """The COPY of one table's primary keys as runs of consecutive values, ``first,last`` per line in
    ascending order (allow-listed names only): keys are mostly a serial's unbroken runs, so the server
    sends a line per gap instead of a line per row (480k keys at scale 10: a few hundred lines)."""
    check_source_table(table)
    key = identifier(PRIMARY_KEYS[table])
    # Identifiers come from the allow-list and are quoted. In a run, key - row_number() is constant.
    return (f"COPY (SELECT min(k), max(k) FROM (SELECT {key} AS k, "  # nosec B608
            f"{key} - row_number() OVER (ORDER BY {key}) AS run FROM {identifier(table)}) keyed "
            "GROUP BY run ORDER BY 1) TO STDOUT WITH (FORMAT csv)")


def expand_runs(first: Union[np.ndarray, Sequence[int]], last: Union[np.ndarray, Sequence[int]]
                ) -> np.ndarray:
    """The sorted int32 keys of runs ``first[i]..last[i]`` (ascending, disjoint, inclusive)."""
    first, last = np.asarray(first, dtype=np.int64), np.asarray(last, dtype=np.int64)
    lengths = last - first + 1
    offsets = np.cumsum(lengths) - lengths
    positions = np.arange(int(lengths.sum()), dtype=np.int64)
    return (positions + np.repeat(first - offsets, lengths)).astype(np.int32)


def read_keys(conn: Connection, table: str) -> np.ndarray:
    """The current primary keys of ``table`` in ``conn``'s transaction: a sorted int32 numpy array."""
    out = io.BytesIO()
    conn.run(keys_sql(table), stream=out)
    if not out.getbuffer().nbytes:  # an empty table (pyarrow refuses an empty CSV)
        return np.empty(0, dtype=np.int32)
    out.seek(0)
    # The schema-drift check has already held the key column to integer (int32).
    runs = pa_csv.read_csv(out, read_options=pa_csv.ReadOptions(column_names=["first", "last"]),
                           convert_options=pa_csv.ConvertOptions(
                               column_types={"first": pa.int64(), "last": pa.int64()}))
    return expand_runs(runs["first"].to_numpy(), runs["last"].to_numpy())


def read_key_sets(connections: Sequence[Connection], tables: Iterable[str]) -> Dict[str, np.ndarray]:
    """{table: sorted int32 keys} of ``tables``, read on ``connections`` (each in a transaction on the
    same snapshot), one thread per connection (pg8000 connections are not thread-safe). Raises the
    first error met; the other threads stop before their next table."""
    work = deque(tables)
    found: Dict[str, np.ndarray] = {}
    stop = threading.Event()

    def read(conn: Connection) -> None:
        while not stop.is_set():
            try:
                table = work.popleft()
            except IndexError:
                return
            try:
                found[table] = read_keys(conn, table)
            except BaseException:
                stop.set()
                raise

    if len(connections) == 1:
        read(connections[0])
        return found
    with ThreadPoolExecutor(max_workers=len(connections), thread_name_prefix="ingest-keys") as pool:
        futures = [pool.submit(read, conn) for conn in connections]
    for future in futures:
        future.result()
    return found


def _key_set_bytes(keys: np.ndarray) -> bytes:
    out = io.BytesIO()
    table = pa.Table.from_arrays([pa.array(keys, type=pa.int32())], schema=KEY_SCHEMA)
    # Sorted integers: delta encoding keeps a million keys to a few kilobytes.
    pq.write_table(table, out, compression="zstd", use_dictionary=False,
                   column_encoding={"id": "DELTA_BINARY_PACKED"})
    return out.getvalue()


def read_previous_keys(s3_client: Any, bucket: str, table: str, key: str) -> np.ndarray:
    """The key set a state pointer names (CorruptFileError naming the key when unreadable)."""
    keys = read_parquet_table(s3_client, bucket, key, table, KEY_SCHEMA)["id"].to_numpy()
    return np.asarray(keys, dtype=np.int32)


def detect_deletes(s3_client: Any, bucket: str, batch_time: datetime,
                   prev_tables: Mapping[str, Mapping[str, Any]], key_sets: Mapping[str, np.ndarray],
                   guard: Optional[RepairOptions] = None
                   ) -> Tuple[Detection, Optional[DeletedEntry]]:
    """Compare ``key_sets`` (this run's keys, {table: sorted int32}) with the key sets the previous
    state entries ``prev_tables`` name; write the changed key sets and, when anything was deleted,
    the deleted-keys file. Returns (Detection, manifest entry or None).

    ``guard``: the RepairOptions whose ``max_delete_fraction`` and ``approved`` tables decide which
    deletions are held (None: none are).

    Raises CorruptFileError when a previous key-set object is missing or unreadable (deletes would
    otherwise be lost silently).
    """
    detection = Detection()
    for table, keys in key_sets.items():
        previous_key: str = (prev_tables.get(table) or {}).get("keys") or ""
        previous = read_previous_keys(s3_client, bucket, table, previous_key) if previous_key else None
        if previous is not None and np.array_equal(previous, keys):
            detection.keys[table] = previous_key
            continue
        if previous is not None:
            deleted = np.setdiff1d(previous, keys, assume_unique=True)
            if guard is not None:
                deleted, keys, held = hold(table, deleted, previous, keys, guard.max_delete_fraction,
                                           guard.approved)
                if held:
                    detection.held[table] = {"rows": held, "table_rows": int(previous.size)}
                if np.array_equal(previous, keys):  # only held deletions: the stored set is unchanged
                    detection.keys[table] = previous_key
                    continue
            if deleted.size:
                detection.deleted[table] = deleted
                logger.info("deletes detected", table=table, rows=int(deleted.size))
        detection.keys[table] = write_key_set(s3_client, bucket, table, batch_time, keys)
    if not detection.deleted:
        return detection, None
    return detection, write_deleted(s3_client, bucket, batch_time, detection.deleted)


def write_key_set(s3_client: Any, bucket: str, table: str, batch_time: datetime, keys: np.ndarray) -> str:
    """Write ``table``'s key set ``keys`` (sorted int32) as the batch's key-set object; return its key."""
    key = generate_file_key(f"{KEYS_PREFIX}/{table}", batch_time)
    write_to_s3(s3_client, bucket, key, _key_set_bytes(keys))
    return key


def write_deleted(s3_client: Any, bucket: str, batch_time: datetime, deleted: Mapping[str, np.ndarray]
                  ) -> DeletedEntry:
    """Write the batch's deleted-keys file of ``deleted`` {table: int32 ids} (not empty); return the
    manifest's ``deleted`` entry."""
    names = list(deleted)
    table = pa.Table.from_arrays(
        [pa.array(np.repeat(np.array(names, dtype=object), [len(deleted[n]) for n in names]),
                  type=pa.string()),
         pa.array(np.concatenate([deleted[n] for n in names]), type=pa.int32())],
        schema=DELETED_SCHEMA)
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    key = generate_file_key(DELETED_PREFIX, batch_time)
    write_to_s3(s3_client, bucket, key, out.getvalue())
    return {"key": key, "rows": table.num_rows, "tables": {name: int(len(deleted[name])) for name in names}}


def carried_detection(s3_client: Any, bucket: str, batch_time: datetime, state: Mapping[str, Any],
                      tables: Collection[str], landed: Mapping[str, np.ndarray]) -> Detection:
    """The Detection of a round that read no key sets (a backfill's intermediate round,
    ``utils.ingest.run._key_sets_due``): the key sets and the held deletions ``state`` names for
    ``tables``, so the round that reads them next compares with these; nothing deleted. ``landed``
    {table: ids of the rows this round landed}: a table's ids not in its key set (rows inserted since it
    was read, landed by this round's window) are added to it, written as this batch's key set, so that the
    round that reads them finds such a row deleted if it is gone by then (docs/RELIABILITY.md defect 18:
    the warehouse held it, and no key set ever had)."""
    entries = state.get("tables") or {}
    held = state.get("held_deletes") or {}
    keys = {table: entries[table]["keys"] for table in tables if (entries.get(table) or {}).get("keys")}
    for table, ids in landed.items():
        if table not in keys or not ids.size:
            continue
        previous = read_previous_keys(s3_client, bucket, table, keys[table])
        ids = np.unique(ids)
        # Sorted sets: a binary search of each landed id, not a sort of the whole key set (millions).
        at = np.searchsorted(previous, ids)
        unseen = ids[(at == previous.size) | (previous[np.minimum(at, previous.size - 1)] != ids)] \
            if previous.size else ids
        if unseen.size:
            keys[table] = write_key_set(s3_client, bucket, table, batch_time,
                                        np.insert(previous, np.searchsorted(previous, unseen), unseen))
    return Detection(keys=keys, held={table: held[table] for table in tables if table in held})


def landed_keys(body: Union[bytes, io.BytesIO], table: str) -> np.ndarray:
    """The primary keys of the rows of ``table``'s landed Parquet file ``body`` (int32, unsorted)."""
    source = body if isinstance(body, io.BytesIO) else pa.BufferReader(body)
    ids = pq.read_table(source, columns=[PRIMARY_KEYS[table]]).column(0)
    return np.asarray(ids.to_numpy(), dtype=np.int32)


def held_deletes(state: Mapping[str, Any], tables: Collection[str], detection: Detection
                 ) -> Dict[str, HeldDeletes]:
    """The state pointer's ``held_deletes`` after a run of ``tables``: this run's held deletions, and the
    previous entries of the tables it did not read."""
    kept = {table: entry for table, entry in (state.get("held_deletes") or {}).items() if table not in tables}
    kept.update(detection.held)
    return kept
