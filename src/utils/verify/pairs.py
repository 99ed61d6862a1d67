"""What `verify` compares: each warehouse table with the source rows it is built from.

A ``Pair`` is two SQL relations of the same shape, ``(id, h)``: ``id`` the source primary key, ``h`` a
64-bit hash of the row's compared values (``hash_record_extended``: each value by its type's hash
function, stable across PostgreSQL versions since hash partitioning relies on them; PostgreSQL 14 or
later). Both sides give each value the same type: a warehouse date as text where the source keeps
text, the warehouse's date and time(3) added back into the source's timestamp, an enum as text (an
enum's hash is its OID's, which differs between databases), so equal rows hash equal in both
databases. The warehouse side is the current state: a fact table's ``current_*`` view (the version
loaded last per id, ids with an open deletion left out), a dimension's row; ids with an open deletion in
``etl_deleted_rows`` are left out on that side too.

``stamps``: the source tables whose rows make the pair's row, with the SQL of each one's
``last_updated``, row ``xmin`` and primary key (a joined dimension is in flight when either of its rows
is: ``utils.verify.in_flight``).
Every name here is a constant of this module (the ``# nosec B608`` below): no identifier or value comes
from input.
"""
from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

# (source table, SQL of its last_updated, of its row xmin, of its primary key).
Stamp = Tuple[str, str, str, str]
RowHash = Callable[[Sequence[str]], str]

# The current-state view of each fact table (utils/catalog/sql/warehouse_schema.sql).
CURRENT_VIEWS = {"fact_sales_order": "current_sales_order", "fact_purchase_order": "current_purchase_order",
                 "fact_payment": "current_payment"}


@dataclass(frozen=True)
class Pair:
    """One comparison; ``table`` is the warehouse table, ``source_table`` the source table whose ids
    it holds (and whose deletions and rejections apply)."""
    table: str
    source_table: str
    source_sql: str
    warehouse_sql: str
    stamps: Tuple[Stamp, ...]
    source_from: str
    source_key: str
    is_fact: bool = False

    def relation(self, side: str) -> str:
        return self.source_sql if side == "source" else self.warehouse_sql


def _not_deleted(source_table: str, id_sql: str) -> str:
    return ("NOT EXISTS (SELECT 1 FROM etl_deleted_rows d "  # nosec B608
            f"WHERE d.source_table = '{source_table}' "
            f"AND d.source_id = {id_sql} AND d.reinserted_batch_id IS NULL)")


def _hash(columns: Sequence[str]) -> str:
    # Each value hashed by its type's own hash function (no text output: about half the cost of
    # hashing the row's text); equal values of equal types hash equal in any PostgreSQL >= 14.
    return f"hash_record_extended(ROW({', '.join(columns)}), 0)"


def _text_hash(columns: Sequence[str]) -> str:
    # PostgreSQL 11-13 (no hash_record_extended): the row's text, hashed. The same value types on both
    # sides give the same text (DateStyle ISO is set by the caller).
    return f"hashtextextended(ROW({', '.join(columns)})::text, 0)"


def _dimension(table: str, source_table: str, key: str, source_columns: Sequence[str],
               warehouse_columns: Sequence[str], source_from: str, stamps: Tuple[Stamp, ...],
               warehouse_key: Optional[str] = None, row_hash: RowHash = _hash) -> Pair:
    warehouse_key = warehouse_key or key
    source = f"SELECT {key} AS id, {row_hash(source_columns)} AS h FROM {source_from}"  # nosec B608
    warehouse_hash = row_hash(warehouse_columns)
    warehouse = (f"SELECT {warehouse_key} AS id, {warehouse_hash} AS h FROM {table} w "  # nosec B608
                 f"WHERE {_not_deleted(source_table, 'w.' + warehouse_key)}")
    return Pair(table, source_table, source, warehouse, stamps, source_from, key)


def _own(alias: str, table: str) -> Stamp:
    return (table, f"{alias}.last_updated", f"{alias}.xmin", f"{alias}.{table}_id")


def _stamp_columns(column: str) -> List[str]:
    return [column]


def _warehouse_stamp_columns(prefix: str) -> List[str]:
    return [f"({prefix}_date + {prefix}_time)"]


def _fact(table: str, source_table: str, key: str, source_values: Sequence[str],
          warehouse_values: Sequence[str], row_hash: RowHash = _hash) -> Pair:
    """A fact pair: the source row against the fact's current version of that id (its current view,
    which users read: the version loaded last, not the one of greatest last_updated)."""
    source_columns = [key, *_stamp_columns("s.created_at"), *_stamp_columns("s.last_updated"),
                      *source_values]
    warehouse_columns = [key, *_warehouse_stamp_columns("created"), *_warehouse_stamp_columns("last_updated"),
                         *warehouse_values]
    source = f"SELECT s.{key} AS id, {row_hash(source_columns)} AS h FROM {source_table} s"  # nosec B608
    view = CURRENT_VIEWS[table]
    warehouse = (f"SELECT {key} AS id, {row_hash(warehouse_columns)} AS h FROM {view} w "  # nosec B608
                 f"WHERE {_not_deleted(source_table, 'w.' + key)}")
    return Pair(table, source_table, source, warehouse, (_own("s", source_table),), f"{source_table} s",
                f"s.{key}", is_fact=True)


ADDRESS_COLUMNS = ["address_line_1", "address_line_2", "district", "city", "postal_code", "country", "phone"]


def build_pairs(line_2_column: str = "counterparty_legal_address_line_2",
                text_hash: bool = False) -> List[Pair]:
    """Every pair, in the warehouse's load order. ``line_2_column``: dim_counterparty's spelling of the
    second address line in this warehouse (SPEC 3 allows ``counterparty_legal_address_line2``); only
    the two allowed spellings are accepted. ``text_hash``: hash each row's text (for a server older
    than PostgreSQL 14, on either side) instead of its typed values."""
    row_hash = _text_hash if text_hash else _hash
    dimension, fact = partial(_dimension, row_hash=row_hash), partial(_fact, row_hash=row_hash)
    if line_2_column not in ("counterparty_legal_address_line_2", "counterparty_legal_address_line2"):
        raise ValueError(f"unexpected dim_counterparty column {line_2_column!r}")
    legal = ["counterparty_legal_address_line_1", line_2_column, "counterparty_legal_district",
             "counterparty_legal_city", "counterparty_legal_postal_code", "counterparty_legal_country",
             "counterparty_legal_phone_number"]
    return [
        dimension("dim_location", "address", "address_id", [f"a.{c}" for c in ADDRESS_COLUMNS],
                  ADDRESS_COLUMNS, "address a", (_own("a", "address"),), warehouse_key="location_id"),
        dimension("dim_currency", "currency", "currency_id", ["c.currency_code"], ["currency_code"],
                  "currency c", (_own("c", "currency"),)),
        dimension("dim_design", "design", "design_id", ["d.design_name", "d.file_location", "d.file_name"],
                  ["design_name", "file_location", "file_name"], "design d", (_own("d", "design"),)),
        dimension("dim_payment_type", "payment_type", "payment_type_id", ["p.payment_type_name::text"],
                  ["payment_type_name"], "payment_type p", (_own("p", "payment_type"),)),
        dimension("dim_transaction", "transaction", "transaction_id",
                  ["t.transaction_type::text", "t.sales_order_id", "t.purchase_order_id"],
                  ["transaction_type", "sales_order_id", "purchase_order_id"], "transaction t",
                  (_own("t", "transaction"),)),
        dimension("dim_counterparty", "counterparty", "counterparty_id",
                  ["c.counterparty_legal_name", *[f"a.{c}" for c in ADDRESS_COLUMNS]],
                  ["counterparty_legal_name", *legal],
                  "counterparty c JOIN address a ON a.address_id = c.legal_address_id",
                  (_own("c", "counterparty"), _own("a", "address"))),
        dimension("dim_staff", "staff", "staff_id",
                  ["s.first_name", "s.last_name", "d.department_name", "d.location", "s.email_address"],
                  ["first_name", "last_name", "department_name", "location", "email_address"],
                  "staff s JOIN department d ON d.department_id = s.department_id",
                  (_own("s", "staff"), _own("d", "department"))),
        fact("fact_sales_order", "sales_order", "sales_order_id",
             ["s.staff_id", "s.counterparty_id", "s.units_sold", "s.unit_price", "s.currency_id",
              "s.design_id",
              "s.agreed_payment_date", "s.agreed_delivery_date", "s.agreed_delivery_location_id"],
             ["sales_staff_id", "counterparty_id", "units_sold", "unit_price", "currency_id", "design_id",
              "agreed_payment_date::text", "agreed_delivery_date::text", "agreed_delivery_location_id"]),
        fact("fact_purchase_order", "purchase_order", "purchase_order_id",
             ["s.staff_id", "s.counterparty_id", "s.item_code", "s.item_quantity", "s.item_unit_price",
              "s.currency_id", "s.agreed_delivery_date", "s.agreed_payment_date",
              "s.agreed_delivery_location_id"],
             ["staff_id", "counterparty_id", "item_code", "item_quantity", "item_unit_price", "currency_id",
              "agreed_delivery_date::text", "agreed_payment_date::text", "agreed_delivery_location_id"]),
        fact("fact_payment", "payment", "payment_id",
             ["s.transaction_id", "s.counterparty_id", "s.payment_amount", "s.currency_id",
              "s.payment_type_id", "s.paid", "s.payment_date"],
             ["transaction_id", "counterparty_id", "payment_amount", "currency_id", "payment_type_id",
              "paid",
              "payment_date::text"]),
    ]
