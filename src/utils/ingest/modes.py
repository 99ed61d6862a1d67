"""The ingest stage's entry point: which mode runs (``INGEST_MODE``), above both modes.

``run_ingest`` validates the event, reads the settings, the repair options and the credentials, opens the
connections and hands them to the mode: ``cursor`` (the default: ``utils.ingest.run.ingest_tables``) or
``cdc`` (``utils.ingest.cdc.run.ingest_changes``). The modes import the shared ingest pieces (the cursor's
batch is one: a CDC snapshot is a cursor batch), never this module: `lint-imports` keeps
``modes -> cdc -> run`` pointing one way (pyproject.toml, ``[tool.importlinter]``).
"""
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional

import boto3

from utils.aws.secrets import db_connections_get_secret
from utils.catalog.source import SOURCE_TABLES, check_source_table
from utils.config import load_settings
from utils.db.connection import close_db_connection, connect_to_db
from utils.errors import InvalidEventError
from utils.ingest.cdc.run import ingest_changes
from utils.ingest.repair import repair_options
from utils.ingest.resync import with_resync
from utils.ingest.run import STAGE, IngestOptions, ingest_tables
from utils.ingest.source_identity import repoint_requested
from utils.logger import get_logger

logger = get_logger(STAGE)


def parse_event(event: Any) -> List[str]:
    """Return the list of tables an event asks for (all eleven when the key is absent).

    Raises InvalidEventError for a non-dict event or a ``tables_to_query`` that is not a
    non-empty list of strings, UnknownTableError for a name not in the allow-list.
    """
    if not isinstance(event, dict):
        raise InvalidEventError(f"event must be a JSON object, got {type(event).__name__}")
    if "tables_to_query" not in event:
        return list(SOURCE_TABLES)
    tables = event["tables_to_query"]
    if not isinstance(tables, list) or not tables:
        raise InvalidEventError("tables_to_query must be a non-empty list of table names")
    for name in tables:
        check_source_table(name)
    # Dependency order, duplicates dropped.
    return [name for name in SOURCE_TABLES if name in tables]


def run_ingest(event: Any, s3_client: Optional[Any] = None,
               secrets_client: Optional[Any] = None) -> Dict[str, str]:
    """Run one ingest in the configured mode; return ``{table_name: file_key}`` for the tables that produced
    a file.

    Raises on any failure (the handler's stage_handler logs it at CRITICAL). Errors before the
    first table is read (bad event, settings, credentials, unreachable database, lock held) write
    nothing.
    """
    tables = parse_event(event)
    settings = load_settings()
    repair = repair_options(event, settings.max_delete_fraction)
    tables = with_resync(tables, repair.resync + repair.approved)
    s3_client = s3_client or boto3.client("s3")
    secrets_client = secrets_client or boto3.client("secretsmanager")
    credentials = db_connections_get_secret(secrets_client, settings.totesys_secret_id)
    logger.info("credentials read", secret_id=settings.totesys_secret_id)
    conn, *helpers = connect_all(credentials, min(settings.ingest_parallel_connections, len(tables)))
    try:
        logger.info("connected to totesys", host=credentials["host"], database=credentials["database"],
                    connections=1 + len(helpers))
        if settings.ingest_mode == "cdc":
            return ingest_changes(conn, s3_client, settings, tables, repair, helpers,
                                  repoint_source=repoint_requested(event))
        options = IngestOptions(settings.ingest_overlap_seconds, settings.max_batch_rows, repair,
                                repoint_source=repoint_requested(event),
                                future_tolerance_seconds=settings.ingest_future_tolerance_seconds)
        return ingest_tables(conn, s3_client, settings.ingest_bucket, tables, options, helpers)
    finally:
        for connection in (conn, *helpers):
            close_db_connection(connection)


def connect_all(credentials: Mapping[str, Any], count: int) -> List[Any]:
    """Open ``count`` connections with ``credentials`` at the same time (most of a connect is
    the server's password check); return them in a list. Their sessions keep the database's
    configured time zone (the zone totesys timestamps are written in).

    When any of them fails, the others are closed and the error of the first failed one (in
    list order) is raised, as ``connect_to_db`` raises it.
    """
    if count == 1:
        return [connect_to_db(credentials=credentials, timezone=None, role="totesys")]
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="ingest-connect") as pool:
        pending = [pool.submit(connect_to_db, credentials=credentials, timezone=None, role="totesys")
                   for _ in range(count)]
    opened = [future.result() for future in pending if future.exception() is None]
    if len(opened) < count:
        for conn in opened:
            close_db_connection(conn)
        errors = [future.exception() for future in pending]
        raise next(error for error in errors if error is not None)
    return opened
