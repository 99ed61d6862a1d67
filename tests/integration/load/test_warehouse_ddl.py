"""The warehouse DDL: its tables' column lists rendered from the catalogue (utils.catalog.warehouse)."""
import re

import pyarrow as pa
import pytest

from utils.catalog import warehouse
from utils.catalog.warehouse import (WAREHOUSE_SCHEMAS, WAREHOUSE_TABLES, warehouse_column_type,
                                     warehouse_columns_sql, warehouse_ddl)
from utils.errors import UnknownTableError
from utils.load.schema import schema_statements
from tests.support.db import run_sql

RECORD_IDS = {"fact_sales_order": "sales_record_id", "fact_purchase_order": "purchase_record_id",
              "fact_payment": "payment_record_id"}


def test_every_table_of_the_template_gets_its_catalogue_columns():
    ddl = warehouse_ddl()
    assert not re.search(r"\{columns:\w+\}", ddl)
    for table in WAREHOUSE_TABLES:
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in ddl
        assert warehouse_columns_sql(table) in ddl


def test_column_definitions_follow_the_catalogue_order_types_and_nullability():
    assert warehouse_columns_sql("dim_location").split(",\n    ") == [
        "location_id integer NOT NULL", "address_line_1 varchar NOT NULL", "address_line_2 varchar",
        "district varchar", "city varchar NOT NULL", "postal_code varchar NOT NULL",
        "country varchar NOT NULL", "phone varchar NOT NULL"]
    assert warehouse_columns_sql("fact_payment").split(",\n    ")[:7] == [
        "payment_id integer NOT NULL", "created_date date NOT NULL", "created_time time(3) NOT NULL",
        "last_updated_date date NOT NULL", "last_updated_time time(3) NOT NULL",
        "transaction_id integer NOT NULL", "counterparty_id integer NOT NULL"]
    assert "payment_amount numeric(10, 2) NOT NULL" in warehouse_columns_sql("fact_payment")
    assert "paid boolean NOT NULL" in warehouse_columns_sql("fact_payment")


@pytest.mark.parametrize("kind, expected", [
    (pa.int32(), "integer"), (pa.int64(), "bigint"), (pa.string(), "varchar"), (pa.date32(), "date"),
    (pa.time64("us"), "time(3)"), (pa.decimal128(12, 3), "numeric(12, 3)"), (pa.bool_(), "boolean"),
    (pa.timestamp("ms"), "timestamp(3)")])
def test_warehouse_column_types(kind, expected):
    assert warehouse_column_type(kind) == expected


def test_a_type_the_warehouse_cannot_hold_is_refused():
    with pytest.raises(TypeError, match="float"):
        warehouse_column_type(pa.float32())


def test_columns_of_an_unknown_table_are_refused():
    with pytest.raises(UnknownTableError):
        warehouse_columns_sql("dim_colour")


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace("{columns:dim_design}", "design_id integer"), "dim_design': 0"),
    (lambda text: text.replace("{columns:dim_design}", "{columns:dim_design}, {columns:dim_design}"),
     "dim_design': 2"),
    (lambda text: text + "\nCREATE TABLE dim_colour ({columns:dim_colour});\n", "unknown ['dim_colour']"),
])
def test_a_template_without_exactly_one_marker_per_table_is_refused(tmp_path, monkeypatch, edit, message):
    template = tmp_path / "warehouse_schema.sql"
    template.write_text(edit(warehouse.WAREHOUSE_DDL.read_text()))
    monkeypatch.setattr(warehouse, "WAREHOUSE_DDL", template)
    with pytest.raises(ValueError, match="marker") as err:
        warehouse_ddl()
    assert message in str(err.value)


def test_a_created_warehouse_has_exactly_the_catalogue_columns_with_their_types(warehouse_url):
    for statement in schema_statements():
        run_sql(warehouse_url, statement)
    rows = run_sql(warehouse_url,
                   "SELECT table_name, column_name, data_type, is_nullable, character_maximum_length, "
                   "numeric_precision, numeric_scale, datetime_precision FROM information_schema.columns "
                   "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")
    found = {}
    for table, column, *kind in rows:
        found.setdefault(table, {})[column] = tuple(kind)
    expected_sql = {
        pa.int32(): ("integer", None, 32, 0, None),
        pa.string(): ("character varying", None, None, None, None),
        pa.date32(): ("date", None, None, None, 0), pa.time64("us"): ("time without time zone", None, None,
                                                                      None, 3),
        pa.decimal128(10, 2): ("numeric", None, 10, 2, None), pa.bool_(): ("boolean", None, None, None, None)}
    for table in WAREHOUSE_TABLES:
        # the fact tables add their record id and load order; the rest of the columns are the catalogue's
        extra = [column for column in found[table] if column not in WAREHOUSE_SCHEMAS[table].names]
        assert extra == ([] if table.startswith("dim_") else [RECORD_IDS[table], "etl_load_order"])
        for field in WAREHOUSE_SCHEMAS[table]:
            data_type, nullable, length, precision, scale, time_precision = found[table][field.name]
            assert (data_type, length, precision, scale, time_precision) == expected_sql[field.type], \
                (table, field.name)
            assert nullable == ("YES" if field.nullable else "NO"), (table, field.name)
