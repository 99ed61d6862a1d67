"""What waits downstream in a local state folder: ``totesys pending`` (and the first half of retry).

Reads the buckets as the runner saved them under ``<state-dir>/s3`` (no emulated AWS needed) and the
warehouse's ledger table:
- ingest batches not yet transformed: the ingest manifests from the one ``_state/ingest.json`` names,
  back along ``prev_manifest_key``, to the one ``_state/transform.json`` names as transformed;
- processed batches not yet loaded: the processed manifests from the one ``_state/transform.json``
  names, back to the newest one in ``etl_load_ledger`` (the load stage loads oldest first, one
  transaction per batch, so the loaded ones are the oldest);
- the last failed run, from ``<state-dir>/last_error.json``;
- rows still waiting in totesys (``more_waiting``: the last ingest cut its batch at MAX_BATCH_ROWS; given
  the source, the rows at or after each table's ``high``) and the warehouse's progress (the current
  orders and payments it holds against the source's): ``progress``.
"""
import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Union, cast

from totesys_local.cdc_slot import slot_line
from totesys_local.errors import LocalError
from totesys_local.local_state import BUCKETS, LAST_ERROR_FILE
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url, describe_url
from utils.aws.manifests import walk_manifests
from utils.contracts import IngestState, TableBounds
from utils.errors import CorruptFileError, TotesysError

SHOWN = 20  # batches listed per kind; older ones are counted


class PendingError(LocalError, TotesysError):
    """The local state cannot be read: a state pointer or manifest is missing or corrupt."""


@dataclass(frozen=True)
class Batch:
    batch_id: str
    batch_time: str
    manifest_key: str


@dataclass
class Pending:
    """Batches waiting downstream, oldest first. ``ledger_error`` says why the processed batches
    could not be checked against the warehouse (then every processed batch is listed)."""
    ingest: List[Batch] = field(default_factory=list)
    processed: List[Batch] = field(default_factory=list)
    warehouse: Optional[str] = None
    ledger_error: Optional[str] = None
    last_error: Optional[Dict[str, Any]] = None
    progress: Optional["Progress"] = None

    def is_empty(self) -> bool:
        return (not self.ingest and not self.processed and self.ledger_error is None
                and (self.progress is None or not self.progress.waiting()))


# The fact tables whose progress `pending` shows: source table -> (current view, what it holds).
PROGRESS_TABLES = {"sales_order": ("current_sales_order", "sales orders"),
                   "purchase_order": ("current_purchase_order", "purchase orders"),
                   "payment": ("current_payment", "payments")}


@dataclass
class Progress:
    """How far the pipeline is behind totesys. ``more_waiting``: the ingest state says the last batch was
    cut; ``waiting``: {source table: rows at or after its ``high``} (None: no source given);
    ``warehouse``/``source``: {source table: current rows} of PROGRESS_TABLES; ``error``: why a database
    could not be read."""
    more_waiting: bool = False
    waiting_rows: Optional[Dict[str, int]] = None
    source: Optional[Dict[str, int]] = None
    warehouse: Optional[Dict[str, int]] = None
    error: Optional[str] = None
    cdc_slot: Optional[str] = None  # INGEST_MODE=cdc: the WAL the slot keeps (cdc_slot.slot_line)

    def waiting(self) -> bool:
        return self.more_waiting or any((self.waiting_rows or {}).values())


def _read(path: Path) -> Optional[Dict[str, Any]]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise PendingError(f"{path} is not valid JSON") from None
    if not isinstance(value, dict):
        raise PendingError(f"{path} is not a JSON object")
    return value


def _chain(root: Path, head_key: Optional[str], stop: Callable[[str, Dict[str, Any]], bool]) -> List[Batch]:
    """Batches of the manifests from ``head_key`` back along prev_manifest_key while
    ``stop(key, manifest)`` is false; oldest first (``utils.aws.manifests.walk_manifests``)."""
    def read(key: str) -> Dict[str, Any]:
        manifest = _read(root / key)
        if manifest is None:
            raise PendingError(f"manifest {root / key} is missing: the local state is incomplete")
        return manifest

    try:
        chain, _ = walk_manifests(read, head_key, stop=stop)
    except CorruptFileError as err:
        raise PendingError(f"{root}: {err}") from None
    return [Batch(str(manifest.get("batch_id")), str(manifest.get("batch_time")), key)
            for key, manifest in chain]


def loaded_batch_ids(warehouse_url: str) -> Set[str]:
    """The batch ids in the warehouse's ``etl_load_ledger`` (empty when the table does not exist)."""
    conn = connect_to_db(credentials=credentials_from_url(warehouse_url))
    try:
        if conn.run("SELECT to_regclass('public.etl_load_ledger') IS NULL")[0][0]:
            return set()
        return {row[0] for row in conn.run("SELECT batch_id FROM etl_load_ledger")}
    finally:
        close_db_connection(conn)


def waiting_rows(source_url: str, tables: Mapping[str, TableBounds],
                 overlap_seconds: Optional[int] = None) -> Dict[str, int]:
    """{source table: rows the next ingest will read} on the source: for a table with an entry in the
    ingest state's ``tables``, the rows of its window (at or after ``high - overlap``, without those the
    last run certainly landed: ``utils.ingest.snapshot``); all rows of a table never read. Backdated
    new keys and future rows are not counted. ``overlap_seconds`` defaults to INGEST_OVERLAP_SECONDS."""
    from pg8000.native import identifier

    from utils.catalog.source import SOURCE_TABLES
    from utils.config import DEFAULT_INGEST_OVERLAP_SECONDS
    from utils.format_time import format_time, parse_time
    from utils.ingest.bounded import OverlapRereads
    from utils.ingest.snapshot import snapshot_bounds
    if overlap_seconds is None:
        overlap_seconds = int(os.environ.get("INGEST_OVERLAP_SECONDS", DEFAULT_INGEST_OVERLAP_SECONDS))
    counts: Dict[str, int] = {}
    conn = connect_to_db(credentials=credentials_from_url(source_url))
    try:
        cur_xmax = snapshot_bounds(conn.run("SELECT pg_current_snapshot()::text")[0][0])[1]
        for table in SOURCE_TABLES:
            entry = tables.get(table)
            sql = f"SELECT count(*) FROM {identifier(table)}"  # nosec B608 - allow-listed name, quoted
            params: Dict[str, object] = {}
            if entry and entry.get("high") and entry.get("snapshot"):
                high = parse_time(entry["high"])
                sql += (" WHERE last_updated >= CAST(:low AS timestamp) AND NOT (last_updated < "
                        f"CAST(:high AS timestamp) AND {OverlapRereads.landed_sql('prev_xmin')})")
                params = {"low": format_time(high - timedelta(seconds=overlap_seconds)),
                          "high": entry["high"], "prev_xmin": snapshot_bounds(entry["snapshot"])[0],
                          "xid_base": cur_xmax >> 32 << 32, "cur_xmax": cur_xmax}
            counts[table] = conn.run(sql, **params)[0][0]
    finally:
        close_db_connection(conn)
    return counts


def current_rows(url: str, views: Mapping[str, str]) -> Dict[str, int]:
    """{source table: rows} of ``views`` ({source table: relation}); a relation that does not exist
    counts 0."""
    from pg8000.native import identifier
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        counts: Dict[str, int] = {}
        for table, relation in views.items():
            if conn.run("SELECT to_regclass(:name) IS NULL", name=relation)[0][0]:
                counts[table] = 0
                continue
            counts[table] = conn.run(f"SELECT count(*) FROM {identifier(relation)}")[0][0]  # nosec B608
        return counts
    finally:
        close_db_connection(conn)


def find_progress(ingest_state: IngestState, source_url: Optional[str],
                  warehouse_url: Optional[str]) -> Progress:
    """The Progress of a state folder whose ingest state is ``ingest_state``; without ``source_url``
    only ``more_waiting``. A database that cannot be read sets ``error`` (never raises TotesysError)."""
    progress = Progress(more_waiting=bool(ingest_state.get("more_waiting")))
    if source_url is None:
        return progress
    try:
        progress.waiting_rows = waiting_rows(source_url, ingest_state.get("tables") or {})
        progress.source = current_rows(source_url, {table: table for table in PROGRESS_TABLES})
        if ingest_state.get("cdc"):
            progress.cdc_slot = _cdc_slot_line(source_url, ingest_state["cdc"]["slot"])
        if warehouse_url is not None:
            progress.warehouse = current_rows(warehouse_url, {table: view for table, (view, _)
                                                              in PROGRESS_TABLES.items()})
    except TotesysError as err:
        progress.error = str(err)
    return progress


def _cdc_slot_line(source_url: str, name: str) -> str:
    conn = connect_to_db(credentials=credentials_from_url(source_url), timezone=None, role="totesys")
    try:
        return slot_line(conn, name)
    finally:
        close_db_connection(conn)


def find_pending(state_dir: Union[str, Path], warehouse_url: Optional[str] = None,
                 source_url: Optional[str] = None) -> Pending:
    """Return the Pending of ``state_dir``. Without ``warehouse_url``, or when the warehouse cannot
    be read, ``ledger_error`` says so and every processed batch is listed as not known to be loaded.
    With ``source_url`` also the rows waiting in totesys and the warehouse's progress (``progress``).
    Raises PendingError when the saved state is incomplete or corrupt."""
    state_dir = Path(state_dir)
    ingest_root = state_dir / "s3" / BUCKETS["INGEST_BUCKET"]
    processed_root = state_dir / "s3" / BUCKETS["PROCESSED_BUCKET"]
    ingest_state = cast(IngestState, _read(ingest_root / "_state" / "ingest.json") or {})
    transform_state = _read(processed_root / "_state" / "transform.json") or {}
    found = Pending(last_error=_read(state_dir / LAST_ERROR_FILE))
    transformed_up_to = transform_state.get("ingest_manifest_key")
    found.ingest = _chain(ingest_root, ingest_state.get("manifest_key"),
                          lambda key, _: key == transformed_up_to)
    loaded: Set[str] = set()
    if warehouse_url is None:
        found.ledger_error = "no warehouse given (--warehouse or TOTESYS_WAREHOUSE_URL)"
    else:
        found.warehouse = describe_url(warehouse_url)
        try:
            loaded = loaded_batch_ids(warehouse_url)
        except TotesysError as err:
            found.ledger_error = f"cannot read etl_load_ledger in {found.warehouse}: {err}"
    found.processed = _chain(processed_root, transform_state.get("manifest_key"),
                             lambda _, manifest: manifest.get("batch_id") in loaded)
    found.progress = find_progress(ingest_state, source_url, None if found.ledger_error else warehouse_url)
    return found


def print_pending(found: Pending, out: Callable[[str], None] = print, indent: str = "") -> None:
    """Print a Pending for an operator: each waiting batch (id and batch time), and the last error."""
    def listing(title: str, batches: Sequence[Batch]) -> None:
        out(f"{indent}{title}: {len(batches)}")
        hidden = len(batches) - SHOWN
        if hidden > 0:
            out(f"{indent}  ... {hidden} older")
        for batch in batches[-SHOWN:]:
            out(f"{indent}  {batch.batch_id}  (batch time {batch.batch_time} UTC)")

    listing("ingest batches not yet transformed", found.ingest)
    if found.ledger_error:
        out(f"{indent}warehouse ledger not checked: {found.ledger_error}")
        listing("processed batches not known to be loaded", found.processed)
    else:
        listing(f"processed batches not yet loaded into {found.warehouse}", found.processed)
    _print_progress(found.progress, out, indent)
    error = found.last_error
    if error:
        out(f"{indent}last failed run: {error.get('time', '?')}, stage {error.get('stage') or '?'}: "
            f"{error.get('error_type', '?')}: {error.get('message', '')}")
        if error.get("log"):
            out(f"{indent}  logs: {error['log']}")
    elif found.is_empty():
        out(f"{indent}nothing pending: every batch is loaded")


def _print_progress(progress: Optional[Progress], out: Callable[[str], None], indent: str) -> None:
    """The rows waiting in totesys and the warehouse's progress (nothing when unknown)."""
    if progress is None:
        return
    if progress.error:
        out(f"{indent}source rows not checked: {progress.error}")
    waiting = {table: rows for table, rows in (progress.waiting_rows or {}).items() if rows}
    if waiting:
        listed = ", ".join(f"{table} {rows:,}" for table, rows in waiting.items())
        out(f"{indent}source rows waiting to be ingested: {sum(waiting.values()):,} ({listed})")
    if progress.cdc_slot:
        out(f"{indent}{progress.cdc_slot}")
    if progress.more_waiting:
        out(f"{indent}more_waiting: the last ingest cut its batch at MAX_BATCH_ROWS; `totesys run` continues")
    if progress.source is not None and progress.warehouse is not None:
        shown = ", ".join(f"{progress.warehouse[table]:,} of {progress.source[table]:,} {label}"
                          for table, (_, label) in PROGRESS_TABLES.items())
        out(f"{indent}warehouse progress (current rows): {shown}")
