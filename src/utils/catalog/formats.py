"""The object formats the stages hand each other in the buckets, below every stage that writes or reads them.

- Key sets (``KEY_SCHEMA``): one sorted int32 column ``id``, the primary keys of a source table at one
  run (``_keys/<table>/...``), written and compared by the ingest (``utils.ingest.deletes``), read by
  ``totesys verify``.
- Deleted keys (``DELETED_SCHEMA``): ``(source_table, source_id)`` of the rows hard-deleted in totesys,
  named by a manifest's ``deleted`` entry in both buckets; written by the ingest, passed on by the
  transform, recorded by the load in ``etl_deleted_rows``.
- Rejected rows (``REJECTED_SCHEMA``): one record per row the warehouse cannot hold, its first problem;
  built by the transform (``utils.transform.quarantine``) and the load (column limits), recorded by the
  load in ``etl_rejected_rows``. ``value_key`` tells the value-versions of one stamp apart
  (``value_keys``; docs/RELIABILITY.md defect 16).
"""
import hashlib
import json
from typing import Any, List, Optional, Tuple, Union
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from utils.catalog.source import INFINITY_MS

EPOCH = datetime(1970, 1, 1)

KEY_SCHEMA = pa.schema([pa.field("id", pa.int32(), nullable=False)])
DELETED_SCHEMA = pa.schema([pa.field("source_table", pa.string(), nullable=False),
                            pa.field("source_id", pa.int32(), nullable=False)])
REJECTED_SCHEMA = pa.schema([
    pa.field("source_table", pa.string(), nullable=False),
    pa.field("source_id", pa.int64()),
    pa.field("last_updated", pa.timestamp("ms")),
    pa.field("column_name", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("value", pa.string()),
    pa.field("value_key", pa.string()),
])
# A record's value key: this many hex digits of a SHA-256 (see value_keys).
VALUE_KEY_DIGITS = 32
# A rejected value is kept as text for the operator, cut to this many characters.
MAX_VALUE_CHARS = 200


def _as_text(value: Any) -> Optional[str]:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


# timestamp[ms] of 0001-01-01 00:00 and of 10000-01-01 00:00: the warehouse holds the years in between.
_FIRST_MS, _END_MS = -62_135_596_800_000, 253_402_300_800_000


def out_of_range_stamps(column: Any) -> Any:
    """True where a timestamp[ms] value lies outside the years 1 to 9999 the warehouse holds."""
    millis = pc.cast(column, pa.int64())
    return pc.or_(pc.less(millis, _FIRST_MS), pc.greater_equal(millis, _END_MS))


def _stamp_text(millis: Optional[int]) -> Optional[str]:
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


def _civil_from_days(days: int) -> Tuple[int, int, int]:
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


def _values_text(values: Any) -> List[Optional[str]]:
    if isinstance(values, (pa.Array, pa.ChunkedArray)) and pa.types.is_timestamp(values.type):
        return [_stamp_text(millis) for millis in values.cast(pa.int64()).to_pylist()]
    return [_as_text(value) for value in (values.to_pylist() if hasattr(values, "to_pylist") else values)]


def _warehouse_stamps(last_updated: Any) -> Any:
    """``last_updated`` with the values outside years 1-9999 (which etl_rejected_rows cannot hold) NULL."""
    return pc.if_else(out_of_range_stamps(last_updated), pa.scalar(None, pa.timestamp("ms")), last_updated)


def value_keys(rows: pa.Table) -> pa.Array:
    """The value key of each row of ``rows``: a hash of its non-NULL values, each as Arrow's text of it
    (the same for the same typed value in any batch: a numeric keeps its scale, a text its trailing
    blanks, a timestamp out of Python's range its integer), named by column. A NULL column counts as
    absent, so a column added to the catalogue (NULL in rows landed before) does not change the key of a
    version recorded before it was added. Deterministic: a re-read version gets the key it had."""
    texts = {name: rows[name] if pa.types.is_string(rows[name].type) else pc.cast(rows[name], pa.string())
             for name in rows.column_names}
    columns = {name: column.to_pylist() for name, column in texts.items()}
    keys = []
    for number in range(rows.num_rows):
        values = {name: column[number] for name, column in columns.items() if column[number] is not None}
        text = json.dumps(values, sort_keys=True, ensure_ascii=False)
        keys.append(hashlib.sha256(text.encode()).hexdigest()[:VALUE_KEY_DIGITS])
    return pa.array(keys, pa.string())


def rejected_records(table_name: str, ids: Any, last_updated: Any, column: str, reason: Union[str, List[str]],
                     values: Any, rows: Optional[pa.Table] = None) -> pa.Table:
    """A REJECTED_SCHEMA table: one record per id; ``reason`` a string or a list of strings; ``rows``
    the rejected rows (one per id) whose ``value_keys`` tell two value-versions of one stamp apart (None:
    no key; the load records it as the empty key, one record per stamp)."""
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
        "value_key": value_keys(rows) if rows is not None else pa.nulls(count, pa.string()),
    }, schema=REJECTED_SCHEMA)


def empty_rejected() -> pa.Table:
    """A REJECTED_SCHEMA table without rows."""
    return REJECTED_SCHEMA.empty_table()
