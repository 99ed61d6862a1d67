"""The seed's interface, fenced: the functions the original ToteSys project documented, under their names,
built on the modules the handlers use. Nothing in the pipeline imports this module (the import contracts
in pyproject.toml keep it on top of ``utils``); it is here for callers of the seed's API.

- ``connect_to_db`` also takes the seed's ``secret_name=`` (``utils.db.connection.connect_to_db`` takes
  credentials);
- ``get_df_from_s3_parquet``: ``utils.aws.objects.read_parquet_table`` as a pandas DataFrame;
- ``parquet_data``: a Python dict of rows or columns as a Parquet file;
- ``query_db``: one statement on a fresh connection, rows as dicts;
- ``generate_new_entry_query``: SQL for "the rows of a table changed in a time range";
- ``get_last_ingest_time`` / ``get_latest_filename``: when a table last landed.

The seed's pure re-exports are gone: import ``utils.catalog.source`` (was ``utils.tables``),
``utils.catalog.warehouse`` and ``utils.transform.star`` (was ``utils.warehouse``), ``utils.aws.objects``
(was ``utils.write_to_s3``), ``utils.aws.secrets`` and ``utils.db.connection`` (was
``utils.db_connections``).
"""
import io
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional

import pyarrow as pa
from pg8000.native import identifier

from utils.aws.objects import list_keys, parquet_bytes, read_parquet_table
from utils.aws.secrets import db_connections_get_secret
from utils.aws.state import read_ingest_state
from utils.catalog.source import check_source_table
from utils.config import load_settings
from utils.db import connection
from utils.errors import DateFormatError
from utils.format_time import format_time, parse_time
from utils.ingest.snapshot import select_list


def connect_to_db(credentials: Optional[Dict[str, Any]] = None, secret_name: Optional[str] = None,
                  secrets_client: Any = None, timezone: Optional[str] = "UTC",
                  role: Optional[str] = None) -> Any:
    """Return an open pg8000 native connection (``utils.db.connection.connect_to_db``).

    Give either a credentials dict or a secret name (read with ``secrets_client``, default a new
    boto3 Secrets Manager client; the secret defaults to the totesys one, whose TLS settings
    ``TOTESYS_SSLMODE``/``TOTESYS_SSLROOTCERT`` then apply unless ``role`` says otherwise). Raises as
    ``utils.db.connection.connect_to_db`` and ``db_connections_get_secret`` do.
    """
    if credentials is None:
        if secrets_client is None:
            import boto3
            secrets_client = boto3.client("secretsmanager")
        if secret_name is None:
            from utils.config import DEFAULT_TOTESYS_SECRET_ID
            secret_name = DEFAULT_TOTESYS_SECRET_ID
            role = role or "totesys"
        credentials = db_connections_get_secret(secrets_client, secret_name)
    return connection.connect_to_db(credentials, timezone=timezone, role=role)


def get_df_from_s3_parquet(s3_client: Any, bucket_name: str, file_key: str, table_name: str,
                           schema: pa.Schema) -> Any:
    """``utils.aws.objects.read_parquet_table`` as a pandas DataFrame (same checks, same errors)."""
    return read_parquet_table(s3_client, bucket_name, file_key, table_name, schema).to_pandas()


def parquet_data(py_dict: Any, schema: Optional[pa.Schema] = None) -> io.BytesIO:
    """Return a BytesIO holding ``py_dict`` as a Parquet file.

    ``py_dict`` is either columnar (``{column: [values]}``) or query_db's shape
    (``{name: [row dicts]}``, one key). Pass ``schema`` (a pyarrow.Schema, e.g. from
    utils.catalog.source.SOURCE_SCHEMAS) to fix the types instead of inferring them; values that do not
    fit the schema raise pyarrow's error. Raises TypeError for anything but a dict.
    """
    if not isinstance(py_dict, dict):
        raise TypeError(f"parquet_data expects a dict, got {type(py_dict).__name__}")
    values = list(py_dict.values())
    if len(values) == 1 and isinstance(values[0], list) and all(isinstance(v, dict) for v in values[0]):
        table = pa.Table.from_pylist(values[0], schema=schema)
    else:
        table = pa.Table.from_pydict(py_dict, schema=schema)
    return io.BytesIO(parquet_bytes(table))


def query_db(sql_string: str, connect_to_db: Callable[[], Any], close_db_connection: Callable[[Any], None],
             dict_name: str = "response", **kwargs: Any) -> Dict[str, Any]:
    """Run ``sql_string`` with the bound parameters ``kwargs`` (``:name`` placeholders).

    ``connect_to_db()`` opens the connection and ``close_db_connection(conn)`` closes it, even on
    error. Returns ``{dict_name: [row dicts]}``; with ``dict_name=""`` returns only the first
    row as a dict (``{}`` when there is none).
    """
    conn = connect_to_db()
    try:
        rows = conn.run(sql_string, **kwargs)
        names = [column["name"] for column in (conn.columns or [])]
    finally:
        close_db_connection(conn)
    records: List[Dict[str, Any]] = [dict(zip(names, row)) for row in (rows or [])]
    if dict_name == "":
        return records[0] if records else {}
    return {dict_name: records}


def generate_new_entry_query(table_name: str, start_time: str, end_time: str) -> str:
    """Return a query for the rows of ``table_name`` with start_time <= last_updated < end_time.

    ``start_time`` and ``end_time`` are format_time strings ('YYYY-MM-DD HH:MM:SS[.ffffff]');
    anything else raises DateFormatError, an unknown table raises UnknownTableError.
    The times are not in the text: the query carries the bound parameters ``:start_time`` and
    ``:end_time`` (pg8000 native style), e.g.
    ``query_db(sql, connect_to_db, close_db_connection, start_time=start, end_time=end)``.
    """
    check_source_table(table_name)
    start, end = parse_time(start_time), parse_time(end_time)
    if start > end:
        raise DateFormatError(
            f"start_time {format_time(start)} is after end_time {format_time(end)}")
    # Identifiers come from the allow-list (check_source_table) and are quoted; times are bound.
    return (f"SELECT {select_list(table_name)} FROM {identifier(table_name)} "  # nosec B608
            "WHERE last_updated >= CAST(:start_time AS timestamp) "
            "AND last_updated < CAST(:end_time AS timestamp)")


def get_latest_filename(s3_client: Any, bucket_name: str, table_name: str) -> Optional[str]:
    """Return the key under ``table_name/`` with the greatest name (the latest batch), or None.

    Keys are ``table_name/yyyy/mm/dd/hhmmssffffff.ext`` (fixed width), so the greatest name is the
    latest time. The listing is paginated: any number of objects (S3 returns 1,000 per page).
    """
    if not isinstance(table_name, str) or not table_name:
        raise ValueError(f"bad table name: {table_name!r}")
    keys = list_keys(s3_client, bucket_name, f"{table_name}/")
    return keys[-1] if keys else None


def get_last_ingest_time(bucket_name: Optional[str] = None, table_name: Optional[str] = None,
                         s3_client: Any = None) -> Optional[datetime]:
    """Return the upper bound (datetime, database clock) of the last successful ingest of
    ``table_name``, or None if it was never ingested.

    "Successful" means recorded in the ingest state pointer: files of a run that failed before
    advancing it do not count, so this is the state's ``tables[table_name].high``, not the newest
    key. ``bucket_name`` defaults to INGEST_BUCKET; ``s3_client`` to a new boto3 client.
    """
    if bucket_name is None:
        bucket_name = load_settings().ingest_bucket
    if s3_client is None:
        import boto3
        s3_client = boto3.client("s3")
    state, _ = read_ingest_state(s3_client, bucket_name)
    entry = state.get("tables", {}).get(table_name) if table_name is not None else None
    if not entry:
        return None
    return parse_time(entry["high"])
