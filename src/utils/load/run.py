"""The load stage: processed batches -> the PostgreSQL warehouse, each batch exactly once.

One run (``run_load``):
1. validate the event (the transform output), read settings and the warehouse credentials;
2. make sure the warehouse schema exists (``utils/catalog/sql/warehouse_schema.sql``; ``utils.load.schema``)
   and that every existing warehouse table has compatible columns (either spelling of
   ``counterparty_legal_address_line_2``), before anything is loaded;
3. walk the processed manifests back from ``_state/transform.json`` to the newest batch already in
   the ledger ``etl_load_ledger``; load the others oldest first, each in ONE transaction:
   ``COPY ... FROM STDIN`` of every table into a temporary staging table, set-based upserts of the
   dimensions (UPDATE of the changed rows, INSERT of the new keys; dim_date rows only inserted), then
   the facts (``INSERT ... SELECT`` of the (natural id, last_updated) versions not yet held), the
   ledger row, COMMIT. A batch already in the ledger is skipped; any failure rolls the
   whole batch back (``utils.load.merge``). Concurrent loads are serialised by a transaction-level
   advisory lock. No lock of the load waits unboundedly (``utils.load.locks``).
4. a fact table receiving many rows has its foreign keys suspended before its first batch and, at the
   end of the execution's last round (the event without ``more_waiting``), re-added and validated
   set-wise once (``utils.load.constraints``).
"""
from typing import Any, Callable, Dict, List, Optional, Tuple

import boto3

from utils.aws.manifests import read_processed_manifest, walk_manifests
from utils.aws.secrets import db_connections_get_secret
from utils.aws.state import read_transform_state
from utils.catalog.warehouse import FACTS, check_warehouse_table
from utils.config import load_settings
from utils.contracts import LoadResult, ProcessedManifest
from utils.db.connection import connect_to_db
from utils.db.kept import connection_key, keeper
from utils.errors import InvalidEventError
from utils.load.constraints import restore_foreign_keys, suspend_for_execution
from utils.load.merge import Warehouse, batch_loaded, load_batch
from utils.load.schema import DELETED, REJECTED, ensure_warehouse_schema
from utils.logger import get_logger

STAGE = "load"
# [(manifest key, processed manifest)] of the batches not in the ledger, oldest first
Pending = List[Tuple[str, ProcessedManifest]]
logger = get_logger(STAGE)


def parse_event(event: Any) -> Dict[str, Any]:
    """Check the load event: the transform output ``{"batches": [...], "tables": {table: rows}}``.

    Raises InvalidEventError for a non-dict or badly shaped value, UnknownTableError for a table
    that is not a warehouse table. The event is only logged: the processed manifests are the truth.
    """
    if not isinstance(event, dict):
        raise InvalidEventError(f"load event must be a JSON object, got {type(event).__name__}")
    tables = event.get("tables", {})
    if not isinstance(tables, dict):
        raise InvalidEventError("load event: 'tables' must be an object of table: rows")
    for name in tables:
        check_warehouse_table(name)
    if not isinstance(event.get("batches", []), list):
        raise InvalidEventError("load event: 'batches' must be a list of batch ids")
    if not isinstance(event.get("more_waiting", False), bool):
        raise InvalidEventError("load event: 'more_waiting' must be true or false")
    return event


def run_load(event: Any, s3_client: Any = None, secrets_client: Any = None) -> Dict[str, Any]:
    """Load every processed batch not yet in the ledger; return ``{"batches": [...], "tables": {...}}``.

    Raises on any failure (the handler's stage_handler logs it at CRITICAL).
    """
    parse_event(event)
    logger.info("load started", transform_result=event)
    settings = load_settings()
    s3_client = s3_client or boto3.client("s3")
    return with_warehouse(lambda conn, connect: load_pending(
        conn, s3_client, settings.processed_bucket, connect=connect,
        more_waiting=event.get("more_waiting", False)), secrets_client)


def with_warehouse(work: Callable[[Any, Callable[[], Any]], Any], secrets_client: Any = None) -> Any:
    """``work(conn, connect)`` on a connection to the configured warehouse; ``connect`` opens another
    connection to it. Returns what ``work`` returns.

    The connection is the one the previous invocation in this process left when it is still the right
    one and healthy (``utils.db.kept``: same credentials, checked, this invocation's timeouts; at most
    WAREHOUSE_KEEP_CONNECTION_SECONDS old), else a new one; after ``work`` it is kept for the next
    invocation, or closed when ``work`` raised or keeping is off."""
    settings = load_settings()
    secrets_client = secrets_client or boto3.client("secretsmanager")
    credentials = db_connections_get_secret(secrets_client, settings.warehouse_secret_id)
    key = connection_key(credentials, "warehouse", "UTC")

    def connect() -> Any:
        return connect_to_db(credentials, role="warehouse")

    with keeper("warehouse").session(key, connect, settings.warehouse_keep_connection_seconds) as session:
        if session.dropped:
            logger.info(f"kept warehouse connection not reused: {session.dropped}")
        logger.info("connected to the warehouse", host=credentials["host"], database=credentials["database"],
                    reused=session.reused)
        return work(session.conn, connect)


def load_pending(conn: Any, s3_client: Any, bucket: str, connect: Optional[Callable[[], Any]] = None,
                 more_waiting: bool = False,
                 take: Optional[Callable[[Pending], Pending]] = None) -> LoadResult:
    """Ensure the schema, then load every pending processed batch, oldest first.

    A fact table receiving many rows has its foreign keys suspended for the execution
    (``utils.load.constraints``); unless ``more_waiting`` (another round of this execution follows),
    every suspended key is re-added and validated set-wise once the batches are loaded.

    Returns ``{"batches": [batch_id, ...], "tables": {warehouse table: rows}, "rejected_rows": n,
    "rejected": {source table: n}}``: the rows newly quarantined in etl_rejected_rows by these batches;
    when these batches recorded hard deletes in etl_deleted_rows, also ``"deleted_rows": n`` and
    ``"deleted": {source table: n}`` (absent when none).

    ``take``: given the pending [(manifest key, manifest)], returns the oldest ones this invocation loads
    (a rebuild's bound, ``utils.rebuild.rounds``); when it leaves some, the result has ``"more_waiting":
    true`` and the suspended keys stay suspended.
    """
    targets = ensure_warehouse_schema(conn)
    result: LoadResult = {"batches": [], "tables": {}, "rejected_rows": 0, "rejected": {}}
    pending = pending_batches(conn, s3_client, bucket)
    taken = take(pending) if take else pending
    if len(taken) < len(pending):
        pending = taken
        result["more_waiting"] = more_waiting = True
    if not pending:
        logger.warning("no processed batches to load")
    suspended = suspend_for_execution(conn, pending_fact_rows(pending))
    warehouse = Warehouse(conn, targets, connect)
    for manifest_key, manifest in pending:
        counts = load_batch(warehouse, s3_client, bucket, manifest_key, manifest)
        if counts is None:
            continue
        result["batches"].append(manifest["batch_id"])
        for source, rows in counts.pop(REJECTED, {}).items():
            result["rejected"][source] = result["rejected"].get(source, 0) + rows
            result["rejected_rows"] += rows
        for source, rows in counts.pop(DELETED, {}).items():
            deleted = result.setdefault("deleted", {})
            deleted[source] = deleted.get(source, 0) + rows
            result["deleted_rows"] = result.get("deleted_rows", 0) + rows
        for name, rows in counts.items():
            result["tables"][name] = result["tables"].get(name, 0) + rows
    if not more_waiting:
        restore_foreign_keys(conn, connect)
    elif suspended:
        logger.info("foreign keys stay suspended for the next round", tables=sorted(suspended))
    return result


def pending_fact_rows(pending: Pending) -> Dict[str, int]:
    """{fact table: rows} the pending batches bring (from their manifests)."""
    rows: dict = {}
    for _, manifest in pending:
        for name in FACTS:
            entry = manifest["tables"].get(name)
            if isinstance(entry, dict) and isinstance(entry.get("rows"), int):
                rows[name] = rows.get(name, 0) + entry["rows"]
    return rows


def pending_batches(conn: Any, s3_client: Any, bucket: str) -> Pending:
    """[(manifest key, manifest)] of the processed batches not in the ledger, oldest first."""
    state, _ = read_transform_state(s3_client, bucket)
    chain, _ = walk_manifests(
        lambda key: read_processed_manifest(s3_client, bucket, key),
        state.get("manifest_key"), stop=lambda _, manifest: batch_loaded(conn, manifest["batch_id"]))
    return chain
