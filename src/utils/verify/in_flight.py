"""Which source rows the ingest brings anyway ("in flight"): `verify` never counts them as mismatches.

A source row that differs from the warehouse (or is missing there) is in flight exactly when the ingest
lands it without a repair (docs/DESIGN.md, "What verify calls in flight"):

- an ingest batch not loaded yet landed it (its id is in that batch's file of the table);
- **cursor mode** (the ingest state has no ``cdc`` pointer: the last run was a cursor run): the next run's
  window takes it. The window is the ingest's own, computed from the state pointer and the source clock
  now by ``utils.ingest.zones.table_windows`` (every UTC offset in play since the last run: a zone moved
  back is covered): stamped at or after ``low``, and not landed by the last run (stamped below its
  ``high`` by a transaction finished before its snapshot); or its key is new since the last run (not in
  the table's latest key set: the next run lands it whatever its stamp, ``utils.ingest.backdated``);
- **CDC mode**: a change of its key is in the replication slot, not consumed yet (peeked: nothing is
  consumed). When the slot cannot be peeked (gone, lost, a role without the REPLICATION attribute) the
  cursor's rule applies instead.

A table the ingest never read is in flight whole. A row made of two source rows (dim_counterparty: a
counterparty and its legal address) is in flight when either is. Anything else that differs is a
mismatch: a row stamped below every window (a back-dated update, an update that kept its stamp) is what
``totesys resync`` repairs.
"""
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

import numpy as np

from utils.catalog.source import PRIMARY_KEYS
from utils.contracts import IngestManifest, IngestState
from utils.format_time import format_time
from utils.ingest.cdc.decode import CdcDecodeError, Truncate, parse_line
from utils.ingest.deletes import read_previous_keys
from utils.ingest.snapshot import LEGACY_TIMEZONE, _prev_tables_in_zone, full_xid_sql, snapshot_bounds
from utils.ingest.zones import Clock, table_windows
from utils.logger import get_logger
from utils.verify.history import read_landed_columns

logger = get_logger("verify")

CLOCK_SQL = ("SELECT now() AT TIME ZONE 'UTC', localtimestamp, current_setting('TimeZone'), "
             "current_schema()::text")


@dataclass(frozen=True)
class Window:
    """One table's next cursor window: ``low`` (raw source stamp, inclusive) and what the last run landed
    (``prev_high``, ``prev_xmin``: stamped below ``prev_high`` by a transaction below ``prev_xmin``)."""
    low: str
    prev_high: str
    prev_xmin: int


class NextRun:
    """What the ingest brings without a repair (module docstring). The slot, the key sets and the files of
    the batches not loaded yet are read when first needed (a verify that finds no difference reads none).

    ``source``: the source connection in verify's snapshot transaction (a session in the source's own zone);
    ``state``: the ingest state pointer; ``pending_manifests``: [(key, manifest)] of the batches not loaded
    yet; ``pending_deleted``: {source table: ids} those batches deleted."""

    def __init__(self, source: Any, s3_client: Any, bucket: str, state: IngestState, overlap_seconds: int,
                 pending_manifests: List[Tuple[str, IngestManifest]],
                 pending_deleted: Mapping[str, Set[int]]) -> None:
        self.source, self.s3_client, self.bucket, self.state = source, s3_client, bucket, state
        self.pending_manifests, self.pending_deleted = pending_manifests, pending_deleted
        utc, wall, self.zone, self.schema = source.run(CLOCK_SQL)[0]
        self.clock, self.overlap_seconds = Clock(utc, wall), overlap_seconds
        self.held = {table: int((entry or {}).get("rows", 0))
                     for table, entry in (state.get("held_deletes") or {}).items()}
        self._windows: Optional[Dict[str, Window]] = None
        self._slot: Optional[Dict[str, Set[int]]] = None
        self._pending: Optional[Dict[str, Set[int]]] = None
        self._key_sets: Dict[str, Optional[np.ndarray]] = {}
        self._resolved = False

    def _resolve(self) -> None:
        """Peek the slot (CDC mode), or compute the cursor windows when there is none to peek."""
        if self._resolved:
            return
        self._resolved = True
        cdc = self.state.get("cdc")
        if cdc:
            self._slot = _slot_changes(self.source, cdc["slot"], self.schema)
        if self._slot is None:
            self._windows = _windows(self.source, self.state, self.clock, self.zone, self.overlap_seconds)

    def window_sql(self, table: str, updated: str, xmin: str, params: Dict[str, Any]) -> str:
        """SQL true for a row of ``table`` (``updated``, ``xmin``: its SQL) the next cursor window takes;
        fills ``params``. False in CDC mode (the slot decides there)."""
        self._resolve()
        if self._windows is None:
            return "false"
        window = self._windows.get(table)
        if window is None:
            return "true"
        params.update({f"low_{table}": window.low, f"prev_high_{table}": window.prev_high,
                       f"prev_xmin_{table}": window.prev_xmin})
        landed = (f"{updated} < CAST(:prev_high_{table} AS timestamp) AND "
                  f"{full_xid_sql(xmin + '::text::bigint')} < :prev_xmin_{table}")
        return f"({updated} >= CAST(:low_{table} AS timestamp) AND NOT ({landed}))"

    def takes(self, table: str, key: int, in_window: bool) -> bool:
        """Whether the ingest brings the source row ``key`` of ``table`` (``in_window``: ``window_sql``'s
        value for it)."""
        self._resolve()
        if in_window or key in self.pending().get(table, ()):
            return True
        if self._slot is not None:
            return key in self._slot.get(table, ())
        keys = self.keys(table)
        return keys is not None and not bool(np.isin(key, keys))

    def deleted_since(self, table: str, ids: List[int]) -> Set[int]:
        """The ``ids`` (gone from the source, in the warehouse) whose deletion the ingest records without a
        repair: deleted by a batch not loaded yet, or still in the table's latest key set (deleted after
        the last run; skipped when the table has held deletions: the set then holds the held ids, which
        stay mismatches until approved)."""
        found = {int(row_id) for row_id in ids if row_id in self.pending_deleted.get(table, ())}
        keys = None if self.held.get(table) or not ids else self.keys(table)
        if keys is not None:
            found |= {int(row_id) for row_id in np.asarray(ids)[np.isin(ids, keys)]}
        return found

    def keys(self, table: str) -> Optional[np.ndarray]:
        """The table's latest key set (read once), or None when the state has none."""
        if table not in self._key_sets:
            entry = (self.state.get("tables") or {}).get(table)
            key = entry.get("keys") if entry else None
            self._key_sets[table] = (read_previous_keys(self.s3_client, self.bucket, table, key)
                                     if key else None)
        return self._key_sets[table]

    def pending(self) -> Dict[str, Set[int]]:
        """{source table: ids} of the rows the ingest batches not loaded yet landed (read once)."""
        if self._pending is None:
            self._pending = _pending_ids(self.s3_client, self.bucket, self.pending_manifests)
        return self._pending


def _windows(source: Any, state: IngestState, clock: Clock, zone: str,
             overlap_seconds: int) -> Dict[str, Window]:
    """{table: Window} of the tables in the state pointer, as the next cursor run computes them."""
    prev_tables = _prev_tables_in_zone(source, state, zone)
    if not prev_tables:
        return {}
    prev_zone = state.get("timezone", LEGACY_TIMEZONE)
    computed = table_windows(source, list(prev_tables), prev_tables, clock, (prev_zone, zone),
                             overlap_seconds, Clock.from_state(state))
    return {table: Window(format_time(window.low), prev_tables[table]["high"],
                          snapshot_bounds(prev_tables[table]["snapshot"])[0])
            for table, window in computed.items() if window.low is not None}


def _slot_changes(source: Any, slot: str, schema: str) -> Optional[Dict[str, Set[int]]]:
    """{table: keys} of the changes in ``slot`` not consumed yet, or None when it cannot be peeked (the
    transaction stays usable: the peek runs under a savepoint)."""
    usable = source.run("SELECT count(*) FROM pg_replication_slots WHERE slot_name = :name "
                        "AND restart_lsn IS NOT NULL AND wal_status IS DISTINCT FROM 'lost'", name=slot)
    if not usable[0][0]:
        logger.warning("verify: the CDC slot is gone or lost: the cursor's rule says what is in flight",
                       slot=slot)
        return None
    source.run("SAVEPOINT verify_peek")
    try:
        rows = source.run("SELECT lsn::text, data FROM pg_logical_slot_peek_changes(:name, NULL, NULL)",
                          name=slot)
    except Exception as err:  # noqa: BLE001 - any refusal (privileges, plugin) falls back to the cursor
        source.run("ROLLBACK TO SAVEPOINT verify_peek")
        logger.warning("verify: cannot peek the CDC slot: the cursor's rule says what is in flight",
                       slot=slot, error=str(err))
        return None
    source.run("RELEASE SAVEPOINT verify_peek")
    changes: Dict[str, Set[int]] = {}
    for lsn, line in rows:
        try:
            change = parse_line(lsn, line, schema)
        except CdcDecodeError as err:  # the next CDC run fails on it and says so
            logger.warning("verify: a change in the slot cannot be decoded", error=str(err))
            continue
        if isinstance(change, Truncate):
            # Not in flight: the next run's mass-delete guard holds an emptied table's deletions until an
            # approval, so they stay mismatches until then (deleted_since skips tables with held rows).
            continue
        if change is not None:
            keys = changes.setdefault(change.table, set())
            keys.add(change.key)
            if change.old_key is not None:
                keys.add(change.old_key)
    return changes


def _pending_ids(s3_client: Any, bucket: str, manifests: Iterable[Any]) -> Dict[str, Set[int]]:
    """{source table: ids} of the rows landed by the ingest batches not loaded yet."""
    found: Dict[str, Set[int]] = {}
    for _, manifest in manifests:
        for table, entry in manifest["tables"].items():
            ids = read_landed_columns(s3_client, bucket, entry["key"], [PRIMARY_KEYS[table]])
            found.setdefault(table, set()).update(
                int(value) for value in ids.column(0).drop_null().to_pylist())
    return found
