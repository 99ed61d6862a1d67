"""Objects in S3: written once, never overwritten; read back as JSON or as schema-checked Parquet."""
import io
import json
from typing import Any, Collection, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from utils.errors import (CorruptFileError, ObjectExistsError, SchemaMismatchError, StateConflictError,
                          StorageThrottledError)


def write_to_s3(s3_client: Any, bucket_name: str, file_key: str, data: Any, overwrite: bool = False) -> None:
    """Put ``data`` (bytes, str or a file-like object) at ``bucket_name/file_key``.

    Objects are immutable: unless ``overwrite`` is set, the write is conditional
    (If-None-Match: *) and an existing key raises ObjectExistsError (``key``).
    S3 throttling raises StorageThrottledError (retryable).
    """
    if hasattr(data, "getvalue"):
        body = data.getvalue()
    elif isinstance(data, str):
        body = data.encode()
    else:
        body = data
    kwargs = {} if overwrite else {"IfNoneMatch": "*"}
    try:
        s3_client.put_object(Bucket=bucket_name, Key=file_key, Body=body, **kwargs)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise ObjectExistsError(
                f"s3://{bucket_name}/{file_key} already exists; objects are never overwritten",
                key=file_key) from None
        if code in ("SlowDown", "Throttling", "RequestLimitExceeded", "503"):
            raise StorageThrottledError(f"S3 throttled the write of {file_key}", key=file_key) from None
        raise


def list_keys(s3_client: Any, bucket_name: str, prefix: str = "") -> List[str]:
    """Every key in ``bucket_name`` under ``prefix``, sorted (paginated: any number of objects)."""
    keys: List[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def write_once(s3_client: Any, bucket: str, key: str, body: bytes) -> bool:
    """Write an immutable object; an existing object with the same bytes (a retried run) is fine.

    Returns True when this call wrote it, False when an earlier attempt had written the same bytes.
    Raises StateConflictError (``key``) when the key holds different bytes: another run wrote there.
    """
    try:
        write_to_s3(s3_client, bucket, key, body)
    except ObjectExistsError as err:
        existing = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        if existing != body:
            raise StateConflictError(f"s3://{bucket}/{key} already holds different bytes: another run "
                                     "wrote it", key=key) from err
        return False
    return True


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as Parquet bytes (snappy)."""
    out = io.BytesIO()
    pq.write_table(table, out, compression="snappy")
    return out.getvalue()


def read_json(s3_client: Any, bucket_name: str, key: str) -> Dict[str, Any]:
    """Read a JSON object (a manifest); CorruptFileError naming the key if it is missing or not one."""
    try:
        body = s3_client.get_object(Bucket=bucket_name, Key=key)["Body"].read()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        raise CorruptFileError(f"cannot read s3://{bucket_name}/{key}: {code}", key=key) from None
    try:
        value = json.loads(body)
    except ValueError:
        raise CorruptFileError(f"s3://{bucket_name}/{key} is not valid JSON", key=key) from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"s3://{bucket_name}/{key} is not a JSON object", key=key)
    return value


def read_parquet_table(s3_client: Any, bucket_name: str, file_key: str, table_name: str, schema: pa.Schema,
                       manifest_key: Optional[str] = None, missing_as_null: Collection[str] = ()) -> pa.Table:
    """Return the object ``bucket_name/file_key`` as a pyarrow.Table with exactly ``schema``.

    Columns are selected and ordered as in ``schema`` (extra columns are ignored); a nullable column named
    in ``missing_as_null`` that the file lacks (a file written before the column was added to the
    catalogue) reads as NULLs. Raises
    CorruptFileError (naming the key, and ``manifest_key`` when given: the manifest that names the
    object) when the object is missing or is not a readable Parquet file, and SchemaMismatchError
    naming ``table_name`` and the column when a column is missing, has a different type, or holds
    NULLs where the schema says NOT NULL.
    """
    where = f"s3://{bucket_name}/{file_key}"
    named_by = f" (named by manifest {manifest_key})" if manifest_key else ""
    try:
        body = s3_client.get_object(Bucket=bucket_name, Key=file_key)["Body"].read()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        raise CorruptFileError(f"{table_name}: cannot read {where}{named_by}: {code}",
                               key=file_key) from None
    try:
        table = pq.read_table(io.BytesIO(body))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CorruptFileError(
            f"{table_name}: {where}{named_by} is not a readable Parquet file ({type(err).__name__})",
            key=file_key) from None
    return conform_table(table, table_name, schema, where, missing_as_null)


def conform_table(table: pa.Table, table_name: str, schema: pa.Schema, where: str = "input",
                  missing_as_null: Collection[str] = ()) -> pa.Table:
    """Check ``table`` against ``schema`` and return it with exactly the schema's columns; a nullable column
    named in ``missing_as_null`` that ``table`` lacks is all NULLs.

    Raises SchemaMismatchError naming ``table_name`` and the first bad column.
    """
    columns = []
    for field in schema:
        if field.name not in table.column_names and field.nullable and field.name in missing_as_null:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        if field.name not in table.column_names:
            raise SchemaMismatchError(
                f"{table_name}: column {field.name!r} is missing from {where}", table=table_name)
        column = table.column(field.name)
        if column.type != field.type:
            raise SchemaMismatchError(
                f"{table_name}: column {field.name!r} in {where} has type {column.type}, "
                f"expected {field.type}", table=table_name)
        if not field.nullable and column.null_count:
            raise SchemaMismatchError(
                f"{table_name}: column {field.name!r} in {where} holds {column.null_count} NULL(s) "
                "but may not be NULL", table=table_name)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)
