"""The warehouse DDL: its tables' column lists rendered from the catalogue (utils.catalog.warehouse)."""
import re

import pyarrow as pa
import pytest

from utils.catalog import warehouse
from utils.catalog.warehouse import (WAREHOUSE_TABLES, warehouse_column_type, warehouse_columns_sql,
                                     warehouse_ddl)
from utils.errors import UnknownTableError


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
