"""The star schema's shape: explicit Arrow schemas of the eleven warehouse tables (and of the processed
files, which carry the source version of a dimension row), their keys, their sources, the load order.

Read by the transform (which builds these tables, ``utils.transform.star``) and by the load (which checks
the warehouse against them, ``utils.load.schema``), and by the warehouse DDL (``warehouse_ddl``): the
column lists of the eleven tables are generated from ``WAREHOUSE_SCHEMAS``;
``utils/catalog/sql/warehouse_schema.sql`` holds the rest (keys, foreign keys, indexes, views, the
sequence, the ledger tables) around a ``{columns:<table>}`` marker in each table's ``CREATE TABLE``.
"""
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pyarrow as pa

from utils.catalog.source import check_table_name

# The warehouse DDL template: tables (their catalogue columns as markers), ledger, unique version indexes,
# current_* views (inside src/: the Lambda zip carries it). ``warehouse_ddl()`` renders it.
WAREHOUSE_DDL = Path(__file__).resolve().parent / "sql" / "warehouse_schema.sql"

_MONEY = pa.decimal128(10, 2)
# Warehouse times keep microseconds (the source has milliseconds).
TIME_OF_DAY = pa.time64("us")


def _schema(*fields: Tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(name, kind, nullable=nullable) for name, kind, nullable in fields])


def _ints(*names: str) -> List[Tuple[str, pa.DataType, bool]]:
    return [(name, pa.int32(), False) for name in names]


def _texts(*names: str, nullable: bool = False) -> List[Tuple[str, pa.DataType, bool]]:
    return [(name, pa.string(), nullable) for name in names]


_STAMPS = [("created_date", pa.date32(), False), ("created_time", TIME_OF_DAY, False),
           ("last_updated_date", pa.date32(), False), ("last_updated_time", TIME_OF_DAY, False)]
WAREHOUSE_SCHEMAS = {
    "dim_date": _schema(("date_id", pa.date32(), False),
                        *_ints("year", "month", "day", "day_of_week"),
                        *_texts("day_name", "month_name"), *_ints("quarter")),
    "dim_staff": _schema(*_ints("staff_id"), *_texts(
        "first_name", "last_name", "department_name", "location", "email_address")),
    "dim_location": _schema(*_ints("location_id"), *_texts("address_line_1"),
                            *_texts("address_line_2", "district", nullable=True),
                            *_texts("city", "postal_code", "country", "phone")),
    "dim_currency": _schema(*_ints("currency_id"), *_texts("currency_code", "currency_name")),
    "dim_design": _schema(*_ints("design_id"), *_texts("design_name", "file_location", "file_name")),
    "dim_counterparty": _schema(
        *_ints("counterparty_id"), *_texts("counterparty_legal_name", "counterparty_legal_address_line_1"),
        *_texts("counterparty_legal_address_line_2", "counterparty_legal_district", nullable=True),
        *_texts("counterparty_legal_city", "counterparty_legal_postal_code", "counterparty_legal_country",
                "counterparty_legal_phone_number")),
    "dim_transaction": _schema(*_ints("transaction_id"), *_texts("transaction_type"),
                               ("sales_order_id", pa.int32(), True), ("purchase_order_id", pa.int32(), True)),
    "dim_payment_type": _schema(*_ints("payment_type_id"), *_texts("payment_type_name")),
    "fact_sales_order": _schema(
        *_ints("sales_order_id"), *_STAMPS,
        *_ints("sales_staff_id", "counterparty_id", "units_sold"), ("unit_price", _MONEY, False),
        *_ints("currency_id", "design_id"), ("agreed_payment_date", pa.date32(), False),
        ("agreed_delivery_date", pa.date32(), False), *_ints("agreed_delivery_location_id")),
    "fact_purchase_order": _schema(
        *_ints("purchase_order_id"), *_STAMPS, *_ints("staff_id", "counterparty_id"),
        *_texts("item_code"), *_ints("item_quantity"), ("item_unit_price", _MONEY, False),
        *_ints("currency_id"), ("agreed_delivery_date", pa.date32(), False),
        ("agreed_payment_date", pa.date32(), False), *_ints("agreed_delivery_location_id")),
    "fact_payment": _schema(
        *_ints("payment_id"), *_STAMPS, *_ints("transaction_id", "counterparty_id"),
        ("payment_amount", _MONEY, False), *_ints("currency_id", "payment_type_id"),
        ("paid", pa.bool_(), False), ("payment_date", pa.date32(), False)),
}
DIMENSIONS = ("dim_date", "dim_staff", "dim_location", "dim_currency", "dim_design", "dim_counterparty",
              "dim_transaction", "dim_payment_type")
FACTS = ("fact_sales_order", "fact_purchase_order", "fact_payment")
# Dimensions before facts: the facts' foreign keys must resolve when they are inserted.
WAREHOUSE_TABLES = DIMENSIONS + FACTS
# The natural key of each table: dimensions are upserted on it, fact versions are unique on it.
WAREHOUSE_KEYS = {
    "dim_date": ("date_id",), "dim_staff": ("staff_id",), "dim_location": ("location_id",),
    "dim_currency": ("currency_id",), "dim_design": ("design_id",), "dim_counterparty": ("counterparty_id",),
    "dim_transaction": ("transaction_id",), "dim_payment_type": ("payment_type_id",),
    "fact_sales_order": ("sales_order_id", "last_updated_date", "last_updated_time"),
    "fact_purchase_order": ("purchase_order_id", "last_updated_date", "last_updated_time"),
    "fact_payment": ("payment_id", "last_updated_date", "last_updated_time"),
}
# The processed dimension files carry one column more than the warehouse table: the source version
# (last_updated; for a dimension built from two source rows, the later of the two). The load keeps it
# in etl_dimension_version and never lets an older version overwrite a newer one.
VERSION_COLUMN = "source_last_updated"
VERSIONED_DIMENSIONS = tuple(name for name in DIMENSIONS if name != "dim_date")


def processed_schema(name: str, warehouse_schema: pa.Schema) -> pa.Schema:
    """The processed files' schema of warehouse table ``name`` (``warehouse_schema``: its columns), with the
    source version column last for a versioned dimension."""
    if name in VERSIONED_DIMENSIONS:
        return warehouse_schema.append(pa.field(VERSION_COLUMN, pa.timestamp("ms"), nullable=False))
    return warehouse_schema


PROCESSED_SCHEMAS = {name: processed_schema(name, schema) for name, schema in WAREHOUSE_SCHEMAS.items()}


def optional_columns(table: str) -> Tuple[str, ...]:
    """The columns of warehouse ``table`` that may be NULL (``WAREHOUSE_SCHEMAS``): a processed file written
    before such a column was added to the catalogue (a batch transformed before the change, loaded after)
    reads as NULLs there; a NOT NULL column must be in the file."""
    return tuple(field.name for field in WAREHOUSE_SCHEMAS[table] if field.nullable)


# The source table (and its id column in the warehouse table) each warehouse row comes from.
WAREHOUSE_SOURCES = {
    "dim_staff": ("staff", "staff_id"), "dim_location": ("address", "location_id"),
    "dim_currency": ("currency", "currency_id"), "dim_design": ("design", "design_id"),
    "dim_counterparty": ("counterparty", "counterparty_id"),
    "dim_transaction": ("transaction", "transaction_id"),
    "dim_payment_type": ("payment_type", "payment_type_id"),
    "fact_sales_order": ("sales_order", "sales_order_id"),
    "fact_purchase_order": ("purchase_order", "purchase_order_id"),
    "fact_payment": ("payment", "payment_id"),
}
# Source tables whose current state the transform keeps between batches (see build_warehouse_batch).
SNAPSHOT_TABLES = ("address", "counterparty", "department", "staff")


def check_warehouse_table(name: Any) -> str:
    """Return ``name`` if it is one of the eleven warehouse tables, else raise UnknownTableError."""
    return check_table_name(name, WAREHOUSE_TABLES, "warehouse table")


# Where a table's catalogue columns go in the DDL template: ``{columns:dim_date}``.
_COLUMNS_MARKER = re.compile(r"\{columns:(\w+)\}")


def warehouse_column_type(kind: pa.DataType) -> str:
    """The warehouse's SQL type of a catalogue column's Arrow type: text is varchar; times keep the source's
    milliseconds (time(3)), as do timestamps; numbers keep the catalogue's precision. Raises TypeError for a
    type the warehouse has no column type for."""
    if pa.types.is_int32(kind) or pa.types.is_int16(kind):
        return "integer"
    if pa.types.is_int64(kind):
        return "bigint"
    if pa.types.is_string(kind):
        return "varchar"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_time(kind):
        return "time(3)"
    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision}, {kind.scale})"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_timestamp(kind):
        return "timestamp(3)"
    raise TypeError(f"no warehouse column type for {kind}")


def warehouse_columns_sql(table: str) -> str:
    """The column definitions of ``table`` as the catalogue declares them, one per line, in order
    (``name type`` and ``NOT NULL`` for a non-nullable field), for its ``CREATE TABLE``."""
    return ",\n    ".join(
        f"{field.name} {warehouse_column_type(field.type)}{'' if field.nullable else ' NOT NULL'}"
        for field in WAREHOUSE_SCHEMAS[check_warehouse_table(table)])


def warehouse_ddl() -> str:
    """The warehouse DDL: ``WAREHOUSE_DDL`` with each ``{columns:<table>}`` marker replaced by that table's
    catalogue columns. Raises ValueError unless every warehouse table has exactly one marker (a known table:
    UnknownTableError otherwise)."""
    template = WAREHOUSE_DDL.read_text()
    marked = _COLUMNS_MARKER.findall(template)
    counts: Dict[str, int] = {name: marked.count(name) for name in WAREHOUSE_TABLES}
    if sorted(marked) != sorted(WAREHOUSE_TABLES):
        unexpected = sorted(set(marked) - set(WAREHOUSE_TABLES))
        raise ValueError(f"{WAREHOUSE_DDL.name}: expected one {{columns:<table>}} marker per warehouse "
                         f"table; counts {counts}, unknown {unexpected}")
    return _COLUMNS_MARKER.sub(lambda match: warehouse_columns_sql(match.group(1)), template)
