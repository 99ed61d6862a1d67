"""Allow-lists of table names and the explicit Arrow schema of every source table.

Nothing is inferred: numeric(10,2) stays decimal128(10, 2) in every batch, timestamps keep
their milliseconds, the agreed dates stay text. Column order is the physical order in totesys.
"""
from typing import Any, Collection, Tuple

import pyarrow as pa

from utils.errors import UnknownTableError

_TS = pa.timestamp("ms")
_MONEY = pa.decimal128(10, 2)


def _schema(*fields: Tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(name, kind, nullable=nullable)
                      for name, kind, nullable in fields])


_CREATED = ("created_at", _TS, False)
_UPDATED = ("last_updated", _TS, False)

SOURCE_SCHEMAS = {
    "address": _schema(
        ("address_id", pa.int32(), False),
        ("address_line_1", pa.string(), False),
        ("address_line_2", pa.string(), True),
        ("district", pa.string(), True),
        ("city", pa.string(), False),
        ("postal_code", pa.string(), False),
        ("country", pa.string(), False),
        ("phone", pa.string(), False),
        _CREATED, _UPDATED),
    "counterparty": _schema(
        ("counterparty_id", pa.int32(), False),
        ("counterparty_legal_name", pa.string(), False),
        ("legal_address_id", pa.int32(), False),
        ("commercial_contact", pa.string(), True),
        ("delivery_contact", pa.string(), True),
        _CREATED, _UPDATED),
    "currency": _schema(
        ("currency_id", pa.int32(), False),
        ("currency_code", pa.string(), False),
        _CREATED, _UPDATED),
    "department": _schema(
        ("department_id", pa.int32(), False),
        ("department_name", pa.string(), False),
        ("location", pa.string(), True),
        ("manager", pa.string(), True),
        _CREATED, _UPDATED),
    "design": _schema(
        ("design_id", pa.int32(), False),
        _CREATED,
        ("design_name", pa.string(), False),
        ("file_location", pa.string(), False),
        ("file_name", pa.string(), False),
        _UPDATED),
    "staff": _schema(
        ("staff_id", pa.int32(), False),
        ("first_name", pa.string(), False),
        ("last_name", pa.string(), False),
        ("department_id", pa.int32(), False),
        ("email_address", pa.string(), False),
        _CREATED, _UPDATED),
    "sales_order": _schema(
        ("sales_order_id", pa.int32(), False),
        _CREATED, _UPDATED,
        ("design_id", pa.int32(), False),
        ("staff_id", pa.int32(), False),
        ("counterparty_id", pa.int32(), False),
        ("units_sold", pa.int32(), False),
        ("unit_price", _MONEY, False),
        ("currency_id", pa.int32(), False),
        ("agreed_delivery_date", pa.string(), False),
        ("agreed_payment_date", pa.string(), False),
        ("agreed_delivery_location_id", pa.int32(), False)),
    "purchase_order": _schema(
        ("purchase_order_id", pa.int32(), False),
        _CREATED, _UPDATED,
        ("staff_id", pa.int32(), False),
        ("counterparty_id", pa.int32(), False),
        ("item_code", pa.string(), False),
        ("item_quantity", pa.int32(), False),
        ("item_unit_price", _MONEY, False),
        ("currency_id", pa.int32(), False),
        ("agreed_delivery_date", pa.string(), False),
        ("agreed_payment_date", pa.string(), False),
        ("agreed_delivery_location_id", pa.int32(), False)),
    "payment_type": _schema(
        ("payment_type_id", pa.int32(), False),
        ("payment_type_name", pa.string(), False),
        _CREATED, _UPDATED),
    "transaction": _schema(
        ("transaction_id", pa.int32(), False),
        ("transaction_type", pa.string(), False),
        ("sales_order_id", pa.int32(), True),
        ("purchase_order_id", pa.int32(), True),
        _CREATED, _UPDATED),
    "payment": _schema(
        ("payment_id", pa.int32(), False),
        _CREATED, _UPDATED,
        ("transaction_id", pa.int32(), False),
        ("counterparty_id", pa.int32(), False),
        ("payment_amount", _MONEY, False),
        ("currency_id", pa.int32(), False),
        ("payment_type_id", pa.int32(), False),
        ("paid", pa.bool_(), False),
        ("payment_date", pa.string(), False),
        ("company_ac_number", pa.int32(), False),
        ("counterparty_ac_number", pa.int32(), False)),
}


def landing_schema(source_schema: pa.Schema) -> pa.Schema:
    """What a landing (ingest) Parquet file of a source table holds: the source types with every column
    nullable. The landing zone keeps whatever the source holds (a NOT NULL dropped in the source must not
    make ingest write a file whose data contradicts its schema); the transform quarantines the rows the
    warehouse cannot hold."""
    return pa.schema([field.with_nullable(True) for field in source_schema])


LANDING_SCHEMAS = {name: landing_schema(schema) for name, schema in SOURCE_SCHEMAS.items()}


def optional_columns(table: str) -> Tuple[str, ...]:
    """The columns of source ``table`` that may be NULL (``SOURCE_SCHEMAS``): a landing file written before
    such a column was added to the catalogue reads as NULLs there; a NOT NULL column must be in the file."""
    return tuple(field.name for field in SOURCE_SCHEMAS[table] if field.nullable)


# How a landing file holds PostgreSQL's 'infinity' timestamp (negated: '-infinity'): the largest
# timestamp[ms], far beyond any real time. The transform quarantines such rows and names the value.
INFINITY_MS = 2 ** 63 - 1

# Dependency order: a table comes after every table it references.
SOURCE_TABLES = (
    "address", "counterparty", "currency", "department", "design", "staff",
    "sales_order", "purchase_order", "payment_type", "transaction", "payment",
)

PRIMARY_KEYS = {table: f"{table}_id" for table in SOURCE_TABLES}


def check_table_name(name: Any, allowed: Collection[str], kind: str = "table") -> str:
    """Return ``name`` if it is one of ``allowed`` (an allow-list of table names), else raise
    UnknownTableError naming it (``table`` attribute) and the allowed names."""
    if not isinstance(name, str) or name not in allowed:
        raise UnknownTableError(f"unknown {kind} {name!r}: expected one of {', '.join(allowed)}",
                                table=name if isinstance(name, str) else None)
    return name


def check_source_table(name: Any) -> str:
    """Return name if it is one of the eleven source tables, else raise UnknownTableError."""
    return check_table_name(name, SOURCE_TABLES)
