"""Read one Parquet object from S3 and check it against the table's explicit Arrow schema."""
import io

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from utils.errors import CorruptFileError, SchemaMismatchError


def read_parquet_table(s3_client, bucket_name, file_key, table_name, schema, manifest_key=None):
    """Return the object ``bucket_name/file_key`` as a pyarrow.Table with exactly ``schema``.

    Columns are selected and ordered as in ``schema`` (extra columns are ignored). Raises
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
    return conform_table(table, table_name, schema, where)


def conform_table(table, table_name, schema, where="input"):
    """Check ``table`` against ``schema`` and return it with exactly the schema's columns.

    Raises SchemaMismatchError naming ``table_name`` and the first bad column.
    """
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            raise SchemaMismatchError(
                f"{table_name}: column {field.name!r} is missing from {where}")
        column = table.column(field.name)
        if column.type != field.type:
            raise SchemaMismatchError(
                f"{table_name}: column {field.name!r} in {where} has type {column.type}, "
                f"expected {field.type}")
        if not field.nullable and column.null_count:
            raise SchemaMismatchError(
                f"{table_name}: column {field.name!r} in {where} holds {column.null_count} NULL(s) "
                "but may not be NULL")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def get_df_from_s3_parquet(s3_client, bucket_name, file_key, table_name, schema):
    """Seed interface: ``read_parquet_table`` as a pandas DataFrame (same checks, same errors)."""
    return read_parquet_table(s3_client, bucket_name, file_key, table_name, schema).to_pandas()
