"""Rows the warehouse cannot hold: found, taken out of their batch, and described for ``etl_rejected_rows``.

A bad row never stops the good ones (SPEC §4.10). The transform checks each landed source row before it
builds the star schema (``split_source_rows``); the load checks what only the warehouse knows (the width of
its columns, references to dimension rows it does not hold). Both describe a rejected row the same way, one
record per row (its first problem): ``REJECTED_SCHEMA``. When the source row is fixed it gets a new
``last_updated``, so the fixed version is a new row version and loads as usual.

Future rows (``split_future_rows``): the ingest lands a row stamped further ahead of the source clock
than its tolerance (``utils.ingest.backdated``) and names the bound, ``future_from``, in the manifest's
table entry; the transform takes such rows out before anything is built, so no dimension, snapshot or
fact ever holds a far-future version (which would hold back every later, correct version of that row).
"""
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from utils.catalog.source import INFINITY_MS, PRIMARY_KEYS, SOURCE_SCHEMAS
from utils.format_time import parse_time

EPOCH = datetime(1970, 1, 1)

REJECTED_SCHEMA = pa.schema([
    pa.field("source_table", pa.string(), nullable=False),
    pa.field("source_id", pa.int64()),
    pa.field("last_updated", pa.timestamp("ms")),
    pa.field("column_name", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("value", pa.string()),
])
# A rejected value is kept as text for the operator, cut to this many characters.
MAX_VALUE_CHARS = 200

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
_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


def required_columns(table_name):
    """The columns of ``table_name`` that feed NOT NULL warehouse columns: the source's NOT NULL
    columns (utils.catalog.source.SOURCE_SCHEMAS) except the ones the star schema does not use."""
    unused = set(UNUSED_COLUMNS.get(table_name, ()))
    if table_name not in FACT_SOURCES:
        unused.add("created_at")
    return [field.name for field in SOURCE_SCHEMAS[table_name]
            if not field.nullable and field.name not in unused]


def _as_text(value):
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def _mask(array):
    """A boolean Arrow array as a numpy bool array (null -> False)."""
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _bad_text_dates(column):
    """True where a text value is not a real 'YYYY-MM-DD' date (NULL is not judged here). Each distinct
    value is judged once: a date column holds a few thousand of them over hundreds of thousands of rows."""
    distinct = pc.unique(column)
    bad = distinct.filter(pc.fill_null(_judge_text_dates(distinct), False))
    return pc.is_in(column, value_set=bad)


def _judge_text_dates(column):
    """_bad_text_dates, value by value."""
    parsed = pc.strptime(column, format="%Y-%m-%d", unit="s", error_is_null=True)
    round_trip = pc.strftime(parsed, format="%Y-%m-%d")
    good = pc.and_(pc.and_(pc.match_substring_regex(column, _DATE_PATTERN), pc.equal(round_trip, column)),
                   pc.greater_equal(pc.year(parsed), 1))
    return pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(good, False)))


# timestamp[ms] of 0001-01-01 00:00 and of 10000-01-01 00:00: the warehouse holds the years in between.
_FIRST_MS, _END_MS = -62_135_596_800_000, 253_402_300_800_000


def _out_of_range_stamps(column):
    millis = pc.cast(column, pa.int64())
    return pc.or_(pc.less(millis, _FIRST_MS), pc.greater_equal(millis, _END_MS))


def source_row_problems(table_name, table):
    """[(column, reason, boolean numpy mask of the rows with that problem)] for a landed source table,
    in the order they are judged."""
    problems = []
    for column in required_columns(table_name):
        problems.append((column, "NULL in a column the warehouse requires", _mask(pc.is_null(table[column]))))
    stamps = ("created_at", "last_updated") if table_name in FACT_SOURCES else ("last_updated",)
    for column in stamps:
        problems.append((column, "timestamp outside the years 1 to 9999 the warehouse holds",
                         _mask(_out_of_range_stamps(table[column]))))
    for column in TEXT_DATE_COLUMNS.get(table_name, ()):
        problems.append((column, "not a valid 'YYYY-MM-DD' date", _mask(_bad_text_dates(table[column]))))
    return problems


def split_source_rows(table_name, table):
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


def _records(table_name, table, rows, column, reason):
    picked = table.take(pa.array(rows))
    return rejected_records(table_name, picked[PRIMARY_KEYS[table_name]], picked["last_updated"], column,
                            reason, picked[column])


def _stamp_text(millis):
    """A timestamp[ms] value (as int64 milliseconds) as text, for any value a landing file can hold."""
    if millis is None:
        return None
    if abs(millis) == INFINITY_MS:
        return "infinity" if millis > 0 else "-infinity"
    if _FIRST_MS <= millis < _END_MS:
        return (EPOCH + timedelta(milliseconds=millis)).isoformat(sep=" ", timespec="milliseconds")
    days, rest = divmod(millis, 86_400_000)
    year, month, day = _civil_from_days(days)
    seconds, fraction = divmod(rest, 1000)
    era = f"{1 - year:04d}" if year < 1 else f"{year:04d}"
    return (f"{era}-{month:02d}-{day:02d} {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
            f".{fraction:03d}{' BC' if year < 1 else ''}")


def _civil_from_days(days):
    """(year, month, day) of the proleptic Gregorian day ``days`` after 1970-01-01, any year (year 0 is
    1 BC); H. Hinnant's civil_from_days."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    return year_of_era + era * 400 + (month <= 2), month, day


def _values_text(values):
    if isinstance(values, (pa.Array, pa.ChunkedArray)) and pa.types.is_timestamp(values.type):
        return [_stamp_text(millis) for millis in values.cast(pa.int64()).to_pylist()]
    return [_as_text(value) for value in (values.to_pylist() if hasattr(values, "to_pylist") else values)]


def _warehouse_stamps(last_updated):
    """``last_updated`` with the values outside years 1-9999 (which etl_rejected_rows cannot hold) NULL."""
    return pc.if_else(_out_of_range_stamps(last_updated), pa.scalar(None, pa.timestamp("ms")), last_updated)


def rejected_records(table_name, ids, last_updated, column, reason, values):
    """A REJECTED_SCHEMA table: one record per id; ``reason`` a string or a list of strings."""
    count = len(ids)
    reasons = reason if isinstance(reason, list) else [reason] * count
    return pa.Table.from_pydict({
        "source_table": [table_name] * count,
        "source_id": pa.array(ids, pa.int64()) if not isinstance(ids, (pa.Array, pa.ChunkedArray))
        else ids.cast(pa.int64()),
        "last_updated": _warehouse_stamps(last_updated) if last_updated is not None
        else pa.nulls(count, pa.timestamp("ms")),
        "column_name": [column] * count,
        "reason": reasons,
        "value": _values_text(values),
    }, schema=REJECTED_SCHEMA)


def empty_rejected():
    return REJECTED_SCHEMA.empty_table()


FUTURE_REASON = ("last_updated is ahead of the source clock by more than INGEST_FUTURE_TOLERANCE_SECONDS "
                 "(at or after {future_from}, source time); held out of the warehouse until a corrected "
                 "version arrives or the source clock passes it")


def split_future_rows(table_name, table, future_from):
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
