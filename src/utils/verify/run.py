"""One `verify`: totesys against the warehouse, table by table, and the fact history against the landing zone.

Both databases are read in one REPEATABLE READ READ ONLY transaction each (a consistent view of each).
Per pair (``utils.verify.pairs``) the checksums (``utils.verify.checksum``) name the ids that differ; each
is then classified:

- ``missing``: in totesys, not in the warehouse's current state; ``differing``: in both, other values;
- ``in_flight``: either of those, for a source row the ingest brings without a repair (landed by a batch
  not loaded yet, in the next cursor run's window, or changed in the CDC slot: ``utils.verify.in_flight``):
  never a mismatch;
- ``quarantined``: either of those, for a source version recorded (unresolved) in ``etl_rejected_rows``:
  reported by the load already, not a mismatch;
- ``extra``: in the warehouse's current state, gone from totesys, and no deletion recorded (in flight
  instead when the id is still in its table's latest key set, deleted after the last ingest run, or a
  batch not loaded yet deleted it);
- ``deletions_recorded``: open deletions in ``etl_deleted_rows`` (ids left out of the current state);
  ``deletions_held``: the deletions the mass-delete guard holds (the ingest state's ``held_deletes``):
  they show as ``extra`` until approved.

Mismatches are missing + differing + extra, the history check's differences, and the rollup keys that
differ from the current views (``utils.verify.rollup_check``).
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from utils.db.connection import close_db_connection
from utils.errors import TotesysError
from utils.ingest.snapshot import import_snapshot
from utils.verify.checksum import Sides, compare
from utils.verify.history import HistoryResult, check_history
from utils.verify.in_flight import NextRun
from utils.verify.landing import latest_loaded, loaded_batch_ids, pending_deleted, read_landed
from utils.verify.pairs import Pair, build_pairs
from utils.verify.rollup_check import RollupReport, check_rollups

ID_LIMIT = 10
REQUIRED_WAREHOUSE = ("etl_load_ledger", "etl_deleted_rows", "etl_rejected_rows", "fact_sales_order",
                      "dim_counterparty")
KINDS = ("missing", "extra", "differing", "in_flight", "quarantined")
MISMATCH_KINDS = ("missing", "extra", "differing")


class VerifyError(TotesysError):
    """`verify` cannot run: the warehouse has not been loaded, or the landing zone cannot be read."""


@dataclass
class TableReport:
    """One warehouse table compared with its source rows; ``ids`` holds up to ID_LIMIT ids per kind."""
    table: str
    source_table: str
    matched: int = 0
    counts: Dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in KINDS})
    ids: Dict[str, List[int]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    deletions_recorded: int = 0
    deletions_held: int = 0

    @property
    def mismatches(self) -> int:
        return sum(self.counts[kind] for kind in MISMATCH_KINDS)

    def add(self, kind: str, row_id: int) -> None:
        self.counts[kind] += 1
        if len(self.ids[kind]) < ID_LIMIT:
            self.ids[kind].append(int(row_id))


@dataclass
class Report:
    """The whole verify: per table, the history check, the last loaded batch, the batches pending and the
    dashboard's rollups."""
    tables: List[TableReport]
    history: List[HistoryResult]
    last_loaded_batch: Optional[str]
    pending_batches: int
    rollups: RollupReport = field(default_factory=RollupReport)

    @property
    def mismatches(self) -> int:
        return (sum(table.mismatches for table in self.tables)
                + sum(h.not_in_warehouse_count + h.not_landed_count for h in self.history)
                + self.rollups.mismatches)

    @property
    def exit_code(self) -> int:
        return 0 if self.mismatches == 0 else 1

    def to_dict(self) -> Dict[str, Any]:
        return {"matched": self.mismatches == 0, "mismatches": self.mismatches,
                "last_loaded_batch": self.last_loaded_batch, "pending_batches": self.pending_batches,
                "tables": [{"table": t.table, "source_table": t.source_table, "matched": t.matched,
                            **t.counts, "deletions_recorded": t.deletions_recorded,
                            "deletions_held": t.deletions_held, "ids": t.ids}
                           for t in self.tables],
                "history": [{**asdict(h), "matched": h.matched} for h in self.history],
                "rollups": self.rollups.to_dict()}


def verify(source: Any, warehouse: Any, s3_client: Any, ingest_bucket: str, overlap_seconds: int,
           history: bool = True, connect_warehouse: Optional[Callable[[], Any]] = None) -> Report:
    """Compare totesys (``source``, a session in the source's own time zone) with the warehouse
    (``warehouse``), using the landing zone in ``ingest_bucket``; return the Report. Both connections
    are left open, their transactions ended. ``connect_warehouse``: a callable opening another warehouse
    connection, on which the history and rollup checks run meanwhile, in the same snapshot (None: one
    after the other on ``warehouse``). Raises VerifyError when the warehouse lacks the pipeline's
    tables, and what reading the landing zone raises (CorruptFileError) when it is damaged."""
    second = None
    try:
        _begin(source, warehouse)
        missing = [name for name in REQUIRED_WAREHOUSE
                   if warehouse.run("SELECT to_regclass(:n) IS NULL", n=name)[0][0]]
        if missing:
            raise VerifyError(f"the warehouse has no {', '.join(missing)}: run the pipeline first")
        landed = read_landed(s3_client, ingest_bucket, loaded_batch_ids(warehouse))

        def warehouse_checks(conn: Any) -> Tuple[List[HistoryResult], RollupReport]:
            checked = (check_history(conn, s3_client, ingest_bucket, landed.manifests, ID_LIMIT)
                       if history else [])
            return checked, check_rollups(conn, ID_LIMIT)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-warehouse") as pool:
            checks = None
            if connect_warehouse is not None:
                second = _second_warehouse(warehouse, connect_warehouse)
                checks = pool.submit(warehouse_checks, second)
            _set_xid_base(source)
            coming = NextRun(source, s3_client, ingest_bucket, landed.state, overlap_seconds,
                             landed.pending_manifests, pending_deleted(s3_client, ingest_bucket, landed))
            sides = Sides(source, warehouse)
            try:
                pairs = build_pairs(_line_2_column(warehouse), text_hash=_needs_text_hash(source, warehouse))
                tables = [_verify_pair(sides, pair, coming) for pair in pairs]
            finally:
                sides.close()
            checked, rollups = checks.result() if checks is not None else warehouse_checks(warehouse)
        return Report(tables, checked, latest_loaded(landed), len(landed.pending_manifests), rollups)
    finally:
        for conn in (source, warehouse):
            conn.run("ROLLBACK")
        if second is not None:
            close_db_connection(second)


def _second_warehouse(warehouse: Any, connect: Callable[[], Any]) -> Any:
    """A new warehouse connection in a transaction that sees ``warehouse``'s snapshot (exported and
    imported: both read one consistent warehouse)."""
    snapshot = warehouse.run("SELECT pg_export_snapshot()")[0][0]
    conn = connect()
    try:
        import_snapshot(conn, snapshot)
        _settings(conn)
    except BaseException:
        close_db_connection(conn)
        raise
    return conn


def _begin(*conns: Any) -> None:
    for conn in conns:
        conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _settings(conn)


def _settings(conn: Any) -> None:
    """The transaction's settings: ISO dates (the hashes of text dates), and no JIT and no parallel
    workers: verify runs its statements side by side already (the source, the warehouse and the checks),
    on a machine whose cores they fill; JIT's compile (~0.1 s a statement) and the workers' overhead cost
    more CPU than they save here (measured at x100: docs/BENCHMARKS.md)."""
    conn.run("SET LOCAL DateStyle = 'ISO, YMD'")
    conn.run("SET LOCAL jit = off")
    conn.run("SET LOCAL max_parallel_workers_per_gather = 0")


def _set_xid_base(source: Any) -> None:
    """The settings ``full_xid_sql`` reads: the epoch of this transaction's snapshot xmax."""
    xmax = int(source.run("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")[0][0])
    source.run("SELECT set_config('totesys.xid_base', :base, true), "
               "set_config('totesys.cur_xmax', :xmax, true)",
               base=str(xmax >> 32 << 32), xmax=str(xmax))


def _needs_text_hash(*conns: Any) -> bool:
    """True when a server is older than PostgreSQL 14 (no hash_record_extended)."""
    return any(int(conn.run("SHOW server_version_num")[0][0]) < 140000 for conn in conns)


def _line_2_column(warehouse: Any) -> str:
    rows = warehouse.run("SELECT column_name::text FROM information_schema.columns WHERE table_name = "
                         "'dim_counterparty' AND column_name = 'counterparty_legal_address_line2' "
                         "AND table_schema = current_schema()")
    return "counterparty_legal_address_line2" if rows else "counterparty_legal_address_line_2"


def _verify_pair(sides: Sides, pair: Pair, coming: NextRun) -> TableReport:
    diff = compare(sides, pair)
    report = TableReport(pair.table, pair.source_table, matched=diff.matched)
    source, warehouse = sides.conns["source"], sides.conns["warehouse"]
    candidates = diff.source_only + diff.differing
    details = _source_details(source, pair, candidates, coming) if candidates else {}
    rejected = _rejected_versions(warehouse, pair.source_table, candidates) if candidates else set()
    for kind, ids in (("missing", diff.source_only), ("differing", diff.differing)):
        for row_id in ids:
            in_flight, last_updated = details[row_id]
            if in_flight:
                report.add("in_flight", row_id)
            elif (row_id, last_updated) in rejected:
                report.add("quarantined", row_id)
            else:
                report.add(kind, row_id)
    deleted_since = coming.deleted_since(pair.source_table, diff.warehouse_only)
    for row_id in diff.warehouse_only:
        report.add("in_flight" if row_id in deleted_since else "extra", row_id)
    report.deletions_held = coming.held.get(pair.source_table, 0)
    report.deletions_recorded = int(warehouse.run(
        "SELECT count(*) FROM etl_deleted_rows WHERE source_table = :t AND reinserted_batch_id IS NULL",
        t=pair.source_table)[0][0])
    return report


def _source_details(source: Any, pair: Pair, ids: List[int],
                    coming: NextRun) -> Dict[int, Tuple[bool, Any]]:
    """{id: (in flight, last_updated of the pair's own source row)} for ``ids``
    (``utils.verify.in_flight``)."""
    params: Dict[str, Any] = {"ids": list(ids)}
    columns = [pair.stamps[0][1]]
    for table, updated, xmin, key in pair.stamps:
        columns += [coming.window_sql(table, updated, xmin, params), key]
    # From this package's constants; values bound.
    sql = (f"SELECT {pair.source_key}, {', '.join(columns)} FROM {pair.source_from} "  # nosec B608
           f"WHERE {pair.source_key} = ANY(CAST(:ids AS int[]))")
    details = {}
    for row_id, own_updated, *flags in source.run(sql, **params):
        in_flight = any(key is not None and coming.takes(table, int(key), bool(flag))
                        for (table, *_), flag, key in zip(pair.stamps, flags[::2], flags[1::2]))
        details[int(row_id)] = (in_flight, own_updated)
    return details


def _rejected_versions(warehouse: Any, source_table: str, ids: List[int]) -> Set[Tuple[int, Any]]:
    rows = warehouse.run("SELECT source_id, last_updated FROM etl_rejected_rows WHERE source_table = :t "
                         "AND source_id = ANY(CAST(:ids AS bigint[])) AND resolved_batch_id IS NULL",
                         t=source_table, ids=list(ids))
    return {(int(row_id), updated) for row_id, updated in rows}
