"""Reading and validating Parquet objects from (moto) S3."""
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from utils.errors import CorruptFileError, SchemaMismatchError
from utils.aws.objects import read_parquet_table
from utils.compat import get_df_from_s3_parquet
from utils.catalog.source import SOURCE_SCHEMAS
from tests.support.batches import address, source_table

SCHEMA = SOURCE_SCHEMAS["address"]


def put_table(s3, bucket, key, table):
    out = io.BytesIO()
    pq.write_table(table, out)
    s3.put_object(Bucket=bucket, Key=key, Body=out.getvalue())


def test_reads_a_valid_file_in_schema_order_ignoring_extra_columns(s3, buckets):
    table = source_table("address", [address(1), address(2, district="West")])
    shuffled = table.select(list(reversed(table.column_names))).append_column("extra", pa.array([1, 2]))
    put_table(s3, buckets["ingest"], "address/x.parquet", shuffled)
    got = read_parquet_table(s3, buckets["ingest"], "address/x.parquet", "address", SCHEMA)
    assert got.schema == SCHEMA
    assert got.to_pylist() == table.to_pylist()
    frame = get_df_from_s3_parquet(s3, buckets["ingest"], "address/x.parquet", "address", SCHEMA)
    assert list(frame.columns) == SCHEMA.names
    assert frame["district"].tolist() == [None, "West"]


def test_missing_column_names_table_and_column(s3, buckets):
    table = source_table("address", [address(1)]).drop_columns(["postal_code"])
    put_table(s3, buckets["ingest"], "address/x.parquet", table)
    with pytest.raises(SchemaMismatchError) as err:
        read_parquet_table(s3, buckets["ingest"], "address/x.parquet", "address", SCHEMA)
    assert str(err.value) == ("address: column 'postal_code' is missing from "
                              f"s3://{buckets['ingest']}/address/x.parquet")


def test_mistyped_column_names_table_column_and_types(s3, buckets):
    table = source_table("address", [address(1)])
    table = table.set_column(0, "address_id", pa.array(["1"]))
    put_table(s3, buckets["ingest"], "address/x.parquet", table)
    with pytest.raises(SchemaMismatchError) as err:
        read_parquet_table(s3, buckets["ingest"], "address/x.parquet", "address", SCHEMA)
    assert str(err.value) == (f"address: column 'address_id' in s3://{buckets['ingest']}/address/x.parquet "
                              "has type string, expected int32")


def test_null_in_a_not_null_column_is_rejected(s3, buckets):
    table = pa.Table.from_pylist([address(1, city=None)],
                                 schema=pa.schema([f.with_nullable(True) for f in SCHEMA]))
    put_table(s3, buckets["ingest"], "address/x.parquet", table)
    with pytest.raises(SchemaMismatchError) as err:
        read_parquet_table(s3, buckets["ingest"], "address/x.parquet", "address", SCHEMA)
    assert "address: column 'city'" in str(err.value)
    assert "holds 1 NULL(s) but may not be NULL" in str(err.value)


def test_corrupt_and_missing_files_raise_corrupt_file_error(s3, buckets):
    s3.put_object(Bucket=buckets["ingest"], Key="address/bad.parquet", Body=b"PAR1 not really parquet")
    with pytest.raises(CorruptFileError) as err:
        read_parquet_table(s3, buckets["ingest"], "address/bad.parquet", "address", SCHEMA)
    assert str(err.value).startswith(
        f"address: s3://{buckets['ingest']}/address/bad.parquet is not a readable Parquet file")
    with pytest.raises(CorruptFileError) as err:
        read_parquet_table(s3, buckets["ingest"], "address/none.parquet", "address", SCHEMA)
    assert str(err.value) == f"address: cannot read s3://{buckets['ingest']}/address/none.parquet: NoSuchKey"
