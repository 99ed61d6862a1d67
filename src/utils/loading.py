"""The load stage: processed batches -> the PostgreSQL warehouse, each batch exactly once.

One run (``run_load``):
1. validate the event (the transform output), read settings and the warehouse credentials;
2. make sure the warehouse schema exists (``sql/warehouse_schema.sql``, shipped inside ``utils``)
   and that every existing warehouse table has compatible columns (either spelling of
   ``counterparty_legal_address_line_2``), before anything is loaded;
3. walk the processed manifests back from ``_state/transform.json`` to the newest batch already in
   the ledger ``etl_load_ledger``; load the others oldest first, each in ONE transaction:
   ``COPY ... FROM STDIN`` of every table into a temporary staging table, set-based upserts of the
   dimensions (``INSERT ... ON CONFLICT (key) DO UPDATE``; dim_date ``DO NOTHING``), then the facts
   (``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` on the unique (natural id, last_updated)
   index), the ledger row, COMMIT. A batch already in the ledger is skipped; any failure rolls the
   whole batch back. Concurrent loads are serialised by a transaction-level advisory lock.
"""
import io
import json
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.csv as pa_csv
from pg8000.native import identifier

from utils.config import load_settings
from utils.db_connections import close_db_connection, connect_to_db, db_connections_get_secret
from utils.errors import CorruptFileError, InvalidEventError, SchemaMismatchError, UnknownTableError
from utils.get_df_from_s3_parquet import read_parquet_table
from utils.logger import get_logger
from utils.state import read_manifest, read_state
from utils.warehouse import FACTS, WAREHOUSE_KEYS, WAREHOUSE_SCHEMAS, WAREHOUSE_TABLES

STAGE = "load"
SCHEMA_FILE = Path(__file__).resolve().parent / "sql" / "warehouse_schema.sql"
LEDGER = "etl_load_ledger"
VIEWS = ("current_sales_order", "current_purchase_order", "current_payment")
VERSION_INDEXES = tuple(f"{name}_version_key" for name in FACTS)
# pg_advisory_xact_lock key serialising loads into one warehouse.
ADVISORY_LOCK_KEY = 0x7074_6573_7973_0003
# Other spellings of a column that existing warehouses use.
COLUMN_ALTERNATIVES = {("dim_counterparty", "counterparty_legal_address_line_2"):
                       ("counterparty_legal_address_line2",)}

logger = get_logger(STAGE)


def _sql_type(kind):
    """(staging column type, accepted information_schema data_types) of an Arrow type."""
    if pa.types.is_integer(kind):
        return "integer", ("integer", "bigint")
    if pa.types.is_string(kind):
        return "text", ("character varying", "text", "character")
    if pa.types.is_date(kind):
        return "date", ("date",)
    if pa.types.is_time(kind):
        return "time(6)", ("time without time zone",)
    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision}, {kind.scale})", ("numeric",)
    if pa.types.is_boolean(kind):
        return "boolean", ("boolean",)
    raise TypeError(f"no SQL type for {kind}")


def parse_event(event):
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
    return event


def check_warehouse_table(name):
    """Return ``name`` if it is one of the eleven warehouse tables, else raise UnknownTableError."""
    if not isinstance(name, str) or name not in WAREHOUSE_SCHEMAS:
        raise UnknownTableError(
            f"unknown warehouse table {name!r}: expected one of {', '.join(WAREHOUSE_TABLES)}")
    return name


def run_load(event, s3_client=None, secrets_client=None):
    """Load every processed batch not yet in the ledger; return ``{"batches": [...], "tables": {...}}``.

    Raises on any failure (the handler's stage_handler logs it at CRITICAL).
    """
    parse_event(event)
    logger.info("load started", transform_result=event)
    settings = load_settings()
    s3_client = s3_client or boto3.client("s3")
    secrets_client = secrets_client or boto3.client("secretsmanager")
    credentials = db_connections_get_secret(secrets_client, settings.warehouse_secret_id)
    conn = connect_to_db(credentials=credentials)
    logger.info("connected to the warehouse", host=credentials["host"], database=credentials["database"])
    try:
        return load_pending(conn, s3_client, settings.processed_bucket)
    finally:
        close_db_connection(conn)


def load_pending(conn, s3_client, bucket):
    """Ensure the schema, then load every pending processed batch, oldest first."""
    columns = ensure_warehouse_schema(conn)
    result = {"batches": [], "tables": {}}
    pending = pending_batches(conn, s3_client, bucket)
    if not pending:
        logger.warning("no processed batches to load")
    for manifest_key, manifest in pending:
        counts = load_batch(conn, s3_client, bucket, manifest_key, manifest, columns)
        if counts is None:
            continue
        result["batches"].append(manifest["batch_id"])
        for name, rows in counts.items():
            result["tables"][name] = result["tables"].get(name, 0) + rows
    return result


# -- schema ----------------------------------------------------------------------------------------

def schema_statements():
    """The statements of the warehouse DDL file, in order."""
    text = SCHEMA_FILE.read_text()
    return [statement.strip() for statement in text.split(";\n") if _has_sql(statement)]


def _has_sql(statement):
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


def _warehouse_columns(conn):
    rows = conn.run(
        "SELECT table_name, column_name, data_type, datetime_precision, numeric_precision, numeric_scale "
        "FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ANY(:names)",
        names=list(WAREHOUSE_TABLES) + [LEDGER])
    found = {}
    for table, column, data_type, time_precision, precision, scale in rows:
        found.setdefault(table, {})[column] = (data_type, time_precision, precision, scale)
    return found


def check_table_columns(table, existing):
    """Map each expected column of ``table`` to its name in the warehouse; raise on incompatibility.

    ``existing``: {column: (data_type, datetime_precision, numeric_precision, numeric_scale)}.
    Raises SchemaMismatchError naming the table and column when one is missing or has a type that
    cannot hold the values (e.g. smallint, time without milliseconds, numeric with fewer decimals).
    """
    mapping = {}
    for field in WAREHOUSE_SCHEMAS[table]:
        names = (field.name,) + COLUMN_ALTERNATIVES.get((table, field.name), ())
        actual = next((name for name in names if name in existing), None)
        if actual is None:
            raise SchemaMismatchError(f"warehouse table {table}: column {field.name!r} is missing")
        data_type, time_precision, precision, scale = existing[actual]
        _, accepted = _sql_type(field.type)
        too_coarse = (
            (pa.types.is_time(field.type) and time_precision is not None and time_precision < 3)
            or (pa.types.is_decimal(field.type) and scale is not None
                and (scale < field.type.scale
                     or precision - scale < field.type.precision - field.type.scale)))
        if data_type not in accepted or too_coarse:
            raise SchemaMismatchError(
                f"warehouse table {table}: column {actual!r} has type {data_type}"
                f"{_precision_text(data_type, time_precision, precision, scale)}, "
                f"expected {' or '.join(accepted)} "
                f"able to hold {field.type}")
        mapping[field.name] = actual
    return mapping


def _precision_text(data_type, time_precision, precision, scale):
    if data_type == "numeric" and precision is not None and scale is not None:
        return f"({precision},{scale})"
    if data_type.startswith("time") and time_precision is not None:
        return f"({time_precision})"
    return ""


def ensure_warehouse_schema(conn):
    """Check existing tables, create whatever is missing; return {table: {column: warehouse name}}.

    Nothing is created or changed when an existing table has an incompatible column
    (SchemaMismatchError naming table and column).
    """
    existing = _warehouse_columns(conn)
    for table in WAREHOUSE_TABLES:
        if table in existing:
            check_table_columns(table, existing[table])
    if LEDGER in existing and not {"batch_id", "manifest_key", "row_counts"} <= set(existing[LEDGER]):
        raise SchemaMismatchError(
            f"warehouse table {LEDGER}: expected columns batch_id, manifest_key, row_counts")
    views = {row[0] for row in conn.run(
        "SELECT table_name FROM information_schema.views WHERE table_schema = current_schema() "
        "AND table_name = ANY(:names)", names=list(VIEWS))}
    indexes = {row[0] for row in conn.run(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ANY(:names)",
        names=list(VERSION_INDEXES))}
    complete = (set(WAREHOUSE_TABLES) | {LEDGER}) <= set(existing) and views == set(VIEWS) \
        and indexes == set(VERSION_INDEXES)
    if not complete:
        conn.run("START TRANSACTION")
        try:
            conn.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
            for statement in schema_statements():
                conn.run(statement)
            conn.run("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        logger.info("warehouse schema created", missing_tables=sorted(
            (set(WAREHOUSE_TABLES) | {LEDGER}) - set(existing)))
        existing = _warehouse_columns(conn)
    return {table: check_table_columns(table, existing[table]) for table in WAREHOUSE_TABLES}


# -- batches ---------------------------------------------------------------------------------------

def batch_loaded(conn, batch_id):
    """True when the ledger records ``batch_id``."""
    sql = f"SELECT 1 FROM {identifier(LEDGER)} WHERE batch_id = :batch_id"  # nosec B608
    return bool(conn.run(sql, batch_id=batch_id))


def pending_batches(conn, s3_client, bucket):
    """[(manifest key, manifest)] of the processed batches not in the ledger, oldest first."""
    state, _ = read_state(s3_client, bucket, "transform")
    key = state.get("manifest_key")
    chain, seen = [], set()
    while key:
        if key in seen:
            raise CorruptFileError(f"processed manifest chain loops at {key}")
        seen.add(key)
        manifest = read_manifest(s3_client, bucket, key, check_warehouse_table, "batch_id")
        if batch_loaded(conn, manifest["batch_id"]):
            break
        chain.append((key, manifest))
        key = manifest.get("prev_manifest_key")
    chain.reverse()
    return chain


def read_batch_tables(s3_client, bucket, manifest):
    """{warehouse table: pyarrow Table} of one processed batch, in load order (dims before facts)."""
    return {name: read_parquet_table(s3_client, bucket, manifest["tables"][name]["key"], name,
                                     WAREHOUSE_SCHEMAS[name])
            for name in WAREHOUSE_TABLES if name in manifest["tables"]}


def load_batch(conn, s3_client, bucket, manifest_key, manifest, columns):
    """Load one processed batch in one transaction; return {table: rows written}, or None when the
    ledger already holds it. Every file is read and checked before the transaction starts."""
    tables = read_batch_tables(s3_client, bucket, manifest)
    batch_id = manifest["batch_id"]
    conn.run("START TRANSACTION")
    try:
        conn.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
        if batch_loaded(conn, batch_id):
            conn.run("ROLLBACK")
            logger.warning("batch already loaded", batch_id=batch_id)
            return None
        counts = {name: merge_table(conn, name, table, columns[name]) for name, table in tables.items()}
        record_batch(conn, batch_id, manifest_key, counts)
        conn.run("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    logger.info("batch loaded", batch_id=batch_id, tables=counts)
    return counts


def record_batch(conn, batch_id, manifest_key, counts):
    """Insert the ledger row of a batch (inside the batch's transaction)."""
    conn.run(f"INSERT INTO {identifier(LEDGER)} (batch_id, manifest_key, row_counts) "  # nosec B608
             "VALUES (:batch_id, :manifest_key, CAST(:counts AS jsonb))",
             batch_id=batch_id, manifest_key=manifest_key, counts=json.dumps(counts, sort_keys=True))


def csv_stream(table):
    """The rows of ``table`` as CSV bytes for COPY (NULL = unquoted empty field, '' = quoted)."""
    out = io.BytesIO()
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False))
    out.seek(0)
    return out


def merge_table(conn, name, table, column_map):
    """COPY ``table`` into a staging table, then upsert (dimension) or append (fact) it into ``name``.

    Returns the number of rows inserted or changed.
    """
    schema = WAREHOUSE_SCHEMAS[name]
    stage = identifier(f"stage_{name}")
    definitions = ", ".join(f"{identifier(field.name)} {_sql_type(field.type)[0]}" for field in schema)
    conn.run(f"CREATE TEMPORARY TABLE {stage} ({definitions}) ON COMMIT DROP")
    source_columns = ", ".join(identifier(field.name) for field in schema)
    conn.run(f"COPY {stage} ({source_columns}) FROM STDIN WITH (FORMAT csv)", stream=csv_stream(table))
    target_columns = ", ".join(identifier(column_map[field.name]) for field in schema)
    insert = (f"INSERT INTO {identifier(name)} AS target ({target_columns}) "  # nosec B608
              f"SELECT {source_columns} FROM {stage} ")
    keys = WAREHOUSE_KEYS[name]
    if name in FACTS:
        # The unique version index decides: a version already recorded is left as it is.
        conn.run(insert + "ON CONFLICT DO NOTHING")
    elif name == "dim_date":
        conn.run(insert + f"ON CONFLICT ({identifier(column_map[keys[0]])}) DO NOTHING")
    else:
        others = [column_map[field.name] for field in schema if field.name not in keys]
        assignments = ", ".join(f"{identifier(column)} = EXCLUDED.{identifier(column)}" for column in others)
        current = ", ".join(f"target.{identifier(column)}" for column in others)
        incoming = ", ".join(f"EXCLUDED.{identifier(column)}" for column in others)
        key = identifier(column_map[keys[0]])
        upsert = (f"ON CONFLICT ({key}) DO UPDATE SET {assignments} "  # nosec B608
                  f"WHERE ({current}) IS DISTINCT FROM ({incoming})")
        conn.run(insert + upsert)
    return conn.row_count


def _rollback(conn):
    """Roll back; a broken connection must not hide the error being raised."""
    try:
        conn.run("ROLLBACK")
    except Exception:  # nosec B110 - the original error is re-raised by the caller
        pass
