"""What the source may hold beyond the spec: NULLs the spec forbids, a drifted schema, values of any
size, timestamps of any year. Every file written is readable with exactly its landing schema; what
cannot land fails before anything is written, naming table, column and value."""
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ingest
from utils.errors import SchemaDriftError, SourceDataError
from utils.ingest.sink import ParquetSink, wall_time_to_epoch_ms
from utils.catalog.source_schema import expected_sql_type, is_compatible
from utils.aws.state import read_state
from utils.catalog.source import LANDING_SCHEMAS, SOURCE_SCHEMAS, SOURCE_TABLES
from tests.support.ingest import assert_each_version_landed_once
from utils.aws.objects import list_keys, read_json
from tests.support.db import run_sql


def read_landed(s3, bucket, key, table):
    """Read a landed file with exactly its landing schema (what the transform does)."""
    body = io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    landed = pq.read_table(body, schema=LANDING_SCHEMAS[table])
    assert pq.read_schema(body).equals(LANDING_SCHEMAS[table])
    return landed


def assert_nothing_landed(s3, bucket):
    assert list_keys(s3, bucket) == []
    assert read_state(s3, bucket, "ingest") == ({}, None)


# -- NULLs -----------------------------------------------------------------------------------------

def test_a_null_in_a_column_the_spec_calls_not_null_lands_as_null_in_a_readable_file(env):
    s3, bucket, url = env
    run_sql(url, "ALTER TABLE address ALTER city DROP NOT NULL")
    run_sql(url, "UPDATE address SET city = NULL WHERE address_id = 2")
    result = ingest.lambda_handler({}, None)
    for table, key in result.items():
        read_landed(s3, bucket, key, table)
    address = read_landed(s3, bucket, result["address"], "address").to_pylist()
    assert {row["address_id"]: row["city"] for row in address} == {1: "Leeds", 2: None}


def test_a_sink_never_writes_a_null_into_a_field_its_schema_declares_not_null():
    sink = ParquetSink(SOURCE_SCHEMAS["currency"], table="currency")
    sink.write(b"1,GBP,2024-11-26 10:00:00,2024-11-26 10:00:00.5\n"
               b"3,,2024-11-26 10:00:00,2024-11-26 10:00:00.5\n")
    with pytest.raises(SourceDataError, match="totesys.currency.currency_code in the row currency_id = 3: "
                                              "NULL in a column") as caught:
        sink.close()
    error = caught.value
    assert (error.table, error.column, error.row_id) == ("currency", "currency_code", 3)


# -- schema drift ----------------------------------------------------------------------------------

@pytest.mark.parametrize("ddl, table, column, expected, found", [
    ("ALTER TABLE sales_order ALTER unit_price TYPE numeric(12,4)", "sales_order", "unit_price",
     "numeric(10,2)", "numeric(12,4)"),
    ("ALTER TABLE payment ALTER payment_amount TYPE numeric", "payment", "payment_amount",
     "numeric(10,2)", "numeric"),
    ("ALTER TABLE payment ALTER last_updated TYPE timestamp(6)", "payment", "last_updated",
     "timestamp(3) without time zone", "timestamp(6) without time zone"),
    ("ALTER TABLE design ALTER created_at TYPE timestamptz(3)", "design", "created_at",
     "timestamp(3) without time zone", "timestamp(3) with time zone"),
    ("ALTER TABLE staff ALTER department_id TYPE bigint", "staff", "department_id", "integer", "bigint"),
    ("ALTER TABLE currency ALTER currency_code TYPE char(3)", "currency", "currency_code",
     "text, varchar(n) or an enum", "character(3)"),
    ("ALTER TABLE payment ALTER paid TYPE int USING paid::int", "payment", "paid", "boolean", "integer"),
    ("ALTER TABLE address DROP COLUMN phone", "address", "phone", "text, varchar(n) or an enum", None),
    ("DROP TABLE payment", "payment", None, "the table", None),
])
def test_a_dropped_or_retyped_column_fails_before_anything_lands(env, ddl, table, column, expected,
                                                                 found):
    s3, bucket, url = env
    run_sql(url, ddl)
    with pytest.raises(SchemaDriftError) as caught:
        ingest.lambda_handler({}, None)
    error = caught.value
    assert (error.table, error.column, error.found) == (table, column, found)
    assert expected in error.expected and expected in str(error)
    where = f"totesys.{table}" + (f".{column}" if column else "")
    assert where in str(error) and (found or "is missing") in str(error)
    assert_nothing_landed(s3, bucket)


@pytest.mark.parametrize("ddl", [
    "ALTER TABLE currency ALTER currency_code TYPE text",
    "ALTER TABLE currency ALTER currency_code TYPE varchar(10)",
    "ALTER TABLE sales_order ALTER unit_price TYPE numeric(8,2)",
    "ALTER TABLE payment ALTER last_updated TYPE timestamp(0)",
    "ALTER TABLE payment_type ALTER payment_type_name TYPE text",
    "ALTER TABLE staff ALTER department_id TYPE smallint",
])
def test_compatible_type_changes_land_the_same_values(env, ddl):
    s3, bucket, url = env
    run_sql(url, ddl)
    result = ingest.lambda_handler({}, None)
    assert sorted(result) == sorted(SOURCE_TABLES)
    for table, key in result.items():
        read_landed(s3, bucket, key, table)
    assert_each_version_landed_once(s3, bucket, url)


def test_an_added_column_is_ignored_with_one_warning_and_recorded(env, ingest_log):
    s3, bucket, url = env
    run_sql(url, "ALTER TABLE staff ADD COLUMN nickname text DEFAULT 'Annie'")
    run_sql(url, "ALTER TABLE payment ADD COLUMN note text, ADD COLUMN flag int")
    result = ingest.lambda_handler({}, None)
    assert read_landed(s3, bucket, result["staff"], "staff").column_names == LANDING_SCHEMAS["staff"].names
    expected = {"payment": ["note", "flag"], "staff": ["nickname"]}
    state, _ = read_state(s3, bucket, "ingest")
    assert read_json(s3, bucket, state["manifest_key"])["ignored_columns"] == expected
    assert state["ignored_columns"] == expected
    warnings = [line for level, line in ingest_log if level == "WARNING" and "ignored" in line]
    assert len(warnings) == 3
    assert any('"table":"staff"' in line and '"column":"nickname"' in line for line in warnings)
    # A subset run replaces only its own tables' entries.
    run_sql(url, "ALTER TABLE staff DROP COLUMN nickname")
    ingest.lambda_handler({"tables_to_query": ["staff"]}, None)
    assert read_state(s3, bucket, "ingest")[0]["ignored_columns"] == {"payment": ["note", "flag"]}


def test_compatibility_rules_for_types_the_catalog_can_hold():
    assert is_compatible(pa.int32(), "int2", "b", -1)
    assert not is_compatible(pa.int32(), "int8", "b", -1)
    assert is_compatible(pa.string(), "PaymentTypeName", "e", -1)
    assert not is_compatible(pa.string(), "bpchar", "b", 7)
    assert not is_compatible(pa.timestamp("ms"), "timestamp", "b", -1)  # no precision = microseconds
    assert is_compatible(pa.decimal128(10, 2), "numeric", "b", ((10 << 16) | 2) + 4)
    assert not is_compatible(pa.decimal128(10, 2), "numeric", "b", ((10 << 16) | 3) + 4)
    assert not is_compatible(pa.date32(), "date", "b", -1)
    with pytest.raises(TypeError, match="date32"):
        expected_sql_type(pa.date32())


# -- values of any size and shape ------------------------------------------------------------------

def test_a_text_value_larger_than_a_chunk_and_a_block_lands(env, monkeypatch):
    s3, bucket, url = env
    big = 'x"y,' + "\n" + "z" * (5 * 1024 * 1024)  # quotes, a comma and a newline, then 5 MiB
    run_sql(url, "UPDATE address SET address_line_1 = :big WHERE address_id = 2", big=big)
    run_sql(url, "UPDATE design SET file_name = repeat('f', 4 * 1024 * 1024)")
    result = ingest.lambda_handler({}, None)
    address = read_landed(s3, bucket, result["address"], "address").to_pylist()
    assert {row["address_id"]: row["address_line_1"] for row in address}[2] == big
    design = read_landed(s3, bucket, result["design"], "design").to_pylist()
    assert len(design[0]["file_name"]) == 4 * 1024 * 1024
    assert_each_version_landed_once(s3, bucket, url)


def test_timestamps_of_any_year_postgresql_allows_land(env):
    s3, bucket, url = env
    run_sql(url, "UPDATE sales_order SET created_at = '4713-01-01 00:00:00.5 BC' WHERE sales_order_id = 1")
    run_sql(url, "UPDATE sales_order SET created_at = '12345-06-07 08:09:10.123' WHERE sales_order_id = 2")
    result = ingest.lambda_handler({}, None)
    landed = read_landed(s3, bucket, result["sales_order"], "sales_order")
    # Python's datetime stops at years 1-9999: compare the milliseconds since 1970 with the server's.
    got = dict(zip(landed["sales_order_id"].to_pylist(), landed["created_at"].cast(pa.int64()).to_pylist()))
    expected = dict(run_sql(url, "SELECT sales_order_id, (extract(epoch FROM created_at) * 1000)::bigint "
                                 "FROM sales_order"))
    assert got == expected
    assert expected[1] < -210_000_000_000_000 and expected[2] > 327_000_000_000_000


@pytest.mark.parametrize("value, millis", [("infinity", 2 ** 63 - 1), ("-infinity", -(2 ** 63 - 1))])
def test_an_infinite_timestamp_lands_as_the_end_of_the_timestamp_range(env, value, millis):
    """The landing zone keeps the row (the transform quarantines it); nothing else changes."""
    s3, bucket, url = env
    run_sql(url, f"UPDATE design SET created_at = '{value}' WHERE design_id = 1")
    files = ingest.lambda_handler({"tables_to_query": ["design"]}, None)
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=files["design"])["Body"].read()))
    stamps = dict(zip(table["design_id"].to_pylist(), table["created_at"].cast(pa.int64()).to_pylist()))
    assert stamps[1] == millis
    assert all(-(2 ** 63 - 1) < stamp < 2 ** 63 - 1 for key, stamp in stamps.items() if key != 1)


@pytest.mark.parametrize("text, millis", [
    ("1970-01-01 00:00:00", 0),
    ("1969-12-31 23:59:59.999", -1),
    ("2024-02-29 12:34:56.78", 1_709_210_096_780),
    ("0001-01-01 00:00:00", -62_135_596_800_000),
    ("0001-12-31 23:59:59 BC", -62_135_596_801_000),  # 1 BC is year 0, a leap year
    ("4713-01-01 00:00:00.5 BC", -210_863_519_999_500),
    ("12345-06-07 08:09:10.123", 327_416_976_550_123),
])
def test_wall_time_to_epoch_ms_for_any_year(text, millis):
    assert wall_time_to_epoch_ms(text) == millis


def test_a_value_pyarrow_cannot_parse_is_named_with_its_table_and_column():
    sink = ParquetSink(LANDING_SCHEMAS["currency"], table="currency")
    sink.write(b"seven,GBP,2024-11-26 10:00:00,2024-11-26 10:00:00\n")
    with pytest.raises(SourceDataError, match="totesys.currency.currency_id: .*invalid value$") as caught:
        sink.close()
    assert "seven" not in str(caught.value) and caught.value.row_id is None


# Source values never reach an error: its message goes to the execution history and the logs.
@pytest.mark.parametrize("row, column", [
    (b"4,,2024-11-26 10:00:00,2024-11-26 10:00:00\n", "currency_code"),
    (b"4,GBP,2024-11-26 10:00:00,2024-11-26 10:00:00,extra-secret\n", None),
    (b"4,GBP,2024-11-26 10:00:00,secret-time\n", "last_updated"),
    (b"4,GBP,24:61 secret,2024-11-26 10:00:00\n", "created_at"),
])
def test_a_source_data_error_names_table_column_and_row_id_never_the_value(row, column):
    sink = ParquetSink(SOURCE_SCHEMAS["currency"], table="currency")
    sink.write(b"1,GBP,2024-11-26 10:00:00,2024-11-26 10:00:00\n" + row)
    with pytest.raises(SourceDataError) as caught:
        sink.close()
    error = caught.value
    assert "secret" not in str(error) and "secret" not in repr(vars(error)), error
    assert error.table == "currency" and error.column == column
    assert error.row_id == (4 if column else None)


def test_one_odd_timestamp_in_a_chunk_keeps_the_other_rows_exact():
    sink = ParquetSink(LANDING_SCHEMAS["currency"], table="currency")
    sink.write(b"1,GBP,2024-11-26 10:00:00.123,2024-11-26 10:00:00\n"
               b"2,USD,0044-03-15 12:00:00 BC,12345-01-01 00:00:00\n"
               b"3,EUR,,2024-11-26 10:00:01\n")
    body, rows = sink.close()
    landed = pq.read_table(body, schema=LANDING_SCHEMAS["currency"])
    assert rows == 3
    assert landed["created_at"].cast(pa.int64()).to_pylist() == [
        1_732_615_200_123, wall_time_to_epoch_ms("0044-03-15 12:00:00 BC"), None]
    assert landed["last_updated"].cast(pa.int64()).to_pylist()[2] == 1_732_615_201_000
