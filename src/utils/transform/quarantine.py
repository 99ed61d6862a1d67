"""Rows the warehouse cannot hold: found, taken out of their batch, and described for ``etl_rejected_rows``.

A bad row never stops the good ones (SPEC §4.10). The transform checks each landed source row before it
builds the star schema (``split_source_rows``); the load checks what only the warehouse knows (the width of
its columns, references to dimension rows it does not hold). Both describe a rejected row the same way, one
record per row (its first problem): ``REJECTED_SCHEMA`` (``utils.catalog.formats``). When the source row
is fixed it gets a new ``last_updated``, so the fixed version is a new row version and loads as usual.

Future rows (``split_future_rows``): the ingest lands a row stamped further ahead of the source clock
than its tolerance (``utils.ingest.backdated``) and names the bound, ``future_from``, in the manifest's
table entry; the transform takes such rows out before anything is built, so no dimension, snapshot or
fact ever holds a far-future version (which would hold back every later, correct version of that row).
"""
from typing import List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from utils.catalog.formats import empty_rejected, out_of_range_stamps, rejected_records
from utils.catalog.source import PRIMARY_KEYS, SOURCE_SCHEMAS
from utils.format_time import parse_time

# Source columns the star schema does not use: a NULL there harms nothing.
UNUSED_COLUMNS = {
    "payment": ("company_ac_number", "counterparty_ac_number"),
    "counterparty": ("commercial_contact", "delivery_contact"),
    "department": ("manager",),
}
# Tables whose rows become facts: their timestamps become warehouse dates (year 1 to 9999).
FACT_SOURCES = ("sales_order", "purchase_order", "payment")
# The agreed dates and the payment date are text 'YYYY-MM-DD' in totesys and dates in the warehouse.
TEXT_DATE_COLUMNS = {
    "sales_order": ("agreed_delivery_date", "agreed_payment_date"),
    "purchase_order": ("agreed_delivery_date", "agreed_payment_date"),
    "payment": ("payment_date",),
}
# An Arrow column: an array, or a table's chunked column.
ArrowArray = Union[pa.Array, pa.ChunkedArray]
_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


def required_columns(table_name: str) -> List[str]:
    """The columns of ``table_name`` that feed NOT NULL warehouse columns: the source's NOT NULL
    columns (utils.catalog.source.SOURCE_SCHEMAS) except the ones the star schema does not use."""
    unused = set(UNUSED_COLUMNS.get(table_name, ()))
    if table_name not in FACT_SOURCES:
        unused.add("created_at")
    return [field.name for field in SOURCE_SCHEMAS[table_name]
            if not field.nullable and field.name not in unused]


def _mask(array: ArrowArray) -> np.ndarray:
    """A boolean Arrow array as a numpy bool array (null -> False)."""
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _bad_text_dates(column: ArrowArray) -> ArrowArray:
    """True where a text value is not a real 'YYYY-MM-DD' date (NULL is not judged here). Each distinct
    value is judged once: a date column holds a few thousand of them over hundreds of thousands of rows."""
    distinct = pc.unique(column)
    bad = distinct.filter(pc.fill_null(_judge_text_dates(distinct), False))
    return pc.is_in(column, value_set=bad)


def _judge_text_dates(column: ArrowArray) -> ArrowArray:
    """_bad_text_dates, value by value."""
    parsed = pc.strptime(column, format="%Y-%m-%d", unit="s", error_is_null=True)
    round_trip = pc.strftime(parsed, format="%Y-%m-%d")
    good = pc.and_(pc.and_(pc.match_substring_regex(column, _DATE_PATTERN), pc.equal(round_trip, column)),
                   pc.greater_equal(pc.year(parsed), 1))
    return pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(good, False)))


def source_row_problems(table_name: str, table: pa.Table) -> List[Tuple[str, str, np.ndarray]]:
    """[(column, reason, boolean numpy mask of the rows with that problem)] for a landed source table,
    in the order they are judged."""
    problems = []
    for column in required_columns(table_name):
        problems.append((column, "NULL in a column the warehouse requires", _mask(pc.is_null(table[column]))))
    stamps = ("created_at", "last_updated") if table_name in FACT_SOURCES else ("last_updated",)
    for column in stamps:
        problems.append((column, "timestamp outside the years 1 to 9999 the warehouse holds",
                         _mask(out_of_range_stamps(table[column]))))
    for column in TEXT_DATE_COLUMNS.get(table_name, ()):
        problems.append((column, "not a valid 'YYYY-MM-DD' date", _mask(_bad_text_dates(table[column]))))
    return problems


def split_source_rows(table_name: str, table: pa.Table) -> Tuple[pa.Table, pa.Table]:
    """Split a landed source table into (good rows, rejected records).

    ``table`` has ``LANDING_SCHEMAS[table_name]`` (every column nullable). A row is rejected for its first
    problem: a NULL in a column the warehouse needs, a fact timestamp outside years 1-9999, a text date that
    is not a real 'YYYY-MM-DD' date. Rejected records have ``REJECTED_SCHEMA``.
    """
    rejected_at = np.zeros(table.num_rows, dtype=bool)
    records = []
    for column, reason, mask in source_row_problems(table_name, table):
        new = mask & ~rejected_at
        if new.any():
            records.append(_records(table_name, table, np.flatnonzero(new), column, reason))
            rejected_at |= new
    if not records:
        return table, empty_rejected()
    good = table.filter(pa.array(~rejected_at))
    return good, pa.concat_tables(records)


def _records(table_name: str, table: pa.Table, rows: np.ndarray, column: str, reason: str) -> pa.Table:
    """The rejected records of ``rows`` of a landed table, each with the value key of the row's kept
    columns (``kept_columns``): two versions of one stamp are two records (docs/RELIABILITY.md defect 16)."""
    picked = table.take(pa.array(rows))
    return rejected_records(table_name, picked[PRIMARY_KEYS[table_name]], picked["last_updated"], column,
                            reason, picked[column], picked.select(kept_columns(table_name, picked)))


def kept_columns(table_name: str, table: pa.Table) -> List[str]:
    """The columns of the landed ``table`` that the star schema keeps (``UNUSED_COLUMNS`` left out): the
    values of a version, as ``verify``'s history check groups them."""
    unused = UNUSED_COLUMNS.get(table_name, ())
    return [name for name in table.column_names if name not in unused]


FUTURE_REASON = ("last_updated is ahead of the source clock by more than INGEST_FUTURE_TOLERANCE_SECONDS "
                 "(at or after {future_from}, source time); held out of the warehouse until a corrected "
                 "version arrives or the source clock passes it")


def split_future_rows(table_name: str, table: pa.Table, future_from: Optional[str]
                      ) -> Tuple[pa.Table, pa.Table]:
    """Split a landed source table into (rows stamped before ``future_from``, rejected records of the
    others). ``future_from``: the manifest entry's text bound (source wall-clock time), or None (the
    batch predates future rows: nothing is split). A NULL last_updated is left to ``split_source_rows``."""
    if not future_from or not table.num_rows:
        return table, empty_rejected()
    bound = pa.scalar(parse_time(future_from), pa.timestamp("ms"))
    ahead = _mask(pc.greater_equal(table["last_updated"], bound))
    if not ahead.any():
        return table, empty_rejected()
    rows = np.flatnonzero(ahead)
    records = _records(table_name, table, rows, "last_updated", FUTURE_REASON.format(future_from=future_from))
    return table.filter(pa.array(~ahead)), records
