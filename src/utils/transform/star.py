"""The star schema: the pure functions that build the eleven warehouse tables from source tables
(their schemas: ``utils.catalog.warehouse``).

Every function takes pyarrow Tables with the landing schemas of ``utils.catalog.source.LANDING_SCHEMAS`` and
returns a pyarrow Table with exactly ``PROCESSED_SCHEMAS[<warehouse table>]`` (the warehouse table's
columns, plus the source version for a dimension), sorted by its key so the same input always gives the
same bytes. Nothing here touches S3 or a database. Rows the warehouse cannot hold are quarantined
(``utils.transform.quarantine``), never a reason to fail the batch.

- Facts keep every version: one row per distinct (primary key, last_updated); ``created_at`` and
  ``last_updated`` are split into a date and a time (milliseconds kept); the text dates become dates.
- Dimensions hold the latest version of each row (greatest last_updated).
- ``build_warehouse_batch`` turns one ingest batch plus the current snapshots of address,
  counterparty, department and staff into the warehouse rows the batch changes.
"""
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from utils.catalog.currencies import currency_name
from utils.catalog.source import LANDING_SCHEMAS, PRIMARY_KEYS
from utils.catalog.warehouse import (FACTS, PROCESSED_SCHEMAS, SNAPSHOT_TABLES, TIME_OF_DAY, VERSION_COLUMN,
                                     WAREHOUSE_KEYS, WAREHOUSE_SCHEMAS, WAREHOUSE_TABLES)
from utils.errors import DateFormatError, SchemaMismatchError
from utils.catalog.formats import empty_rejected, rejected_records
from utils.transform.quarantine import ArrowArray, split_source_rows

_DAY_NAMES = pa.array(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"])
_MONTH_NAMES = pa.array(["January", "February", "March", "April", "May", "June", "July", "August",
                         "September", "October", "November", "December"])


# -- row selection -------------------------------------------------------------------------------

def _sorted_versions(table: pa.Table, key: str) -> Tuple[pa.Table, np.ndarray, np.ndarray]:
    """``table`` sorted by (key, last_updated, original position) and the key/time arrays."""
    order = np.lexsort((np.arange(table.num_rows),
                        table["last_updated"].to_numpy().astype("int64"),
                        table[key].to_numpy()))
    ordered = table.take(pa.array(order))
    return ordered, ordered[key].to_numpy(), ordered["last_updated"].to_numpy().astype("int64")


def latest_rows(table: pa.Table, key: str) -> pa.Table:
    """Keep, for each value of ``key``, the row with the greatest last_updated (the later row of a tie)."""
    if table.num_rows == 0:
        return table
    ordered, keys, _ = _sorted_versions(table, key)
    last_of_key = np.append(keys[1:] != keys[:-1], True)
    return ordered.filter(pa.array(last_of_key))


def distinct_versions(table: pa.Table, key: str) -> pa.Table:
    """Keep one row per distinct (``key``, last_updated): the versions a fact table records."""
    if table.num_rows == 0:
        return table
    ordered, keys, stamps = _sorted_versions(table, key)
    first = np.insert((keys[1:] != keys[:-1]) | (stamps[1:] != stamps[:-1]), 0, True)
    return ordered.filter(pa.array(first))


def merge_snapshot(snapshot: Optional[pa.Table], changes: pa.Table, key: str) -> pa.Table:
    """The current state after ``changes`` (a later batch): each row of ``changes`` (the latest of its
    versions in the batch) replaces the snapshot's row of its key, whatever their last_updated (a batch
    reads the source's state after the snapshot's; its version may be stamped earlier: a back-dated
    update, a clock that went back, a row restored; docs/RELIABILITY.md defect 3). Other rows stay."""
    changed = latest_rows(changes, key)
    if snapshot is None or snapshot.num_rows == 0:
        return changed
    changed = changed.cast(snapshot.schema)
    kept = snapshot.filter(pc.invert(pc.is_in(snapshot[key], value_set=changed[key].combine_chunks())))
    return pa.concat_tables([kept, changed]).sort_by([(key, "ascending")])


# -- column conversions --------------------------------------------------------------------------

def text_to_date(column: ArrowArray, table_name: str, column_name: str) -> ArrowArray:
    """Cast 'YYYY-MM-DD' text to date32; DateFormatError naming table, column and the first bad value."""
    try:
        return column.cast(pa.date32())
    except pa.ArrowInvalid:
        pass
    for value in column.to_pylist():
        try:
            pa.array([value], pa.string()).cast(pa.date32())
        except pa.ArrowInvalid:
            raise DateFormatError(
                f"{table_name}: column {column_name!r} holds {value!r}, which is not a 'YYYY-MM-DD' date",
                table=table_name) from None
    raise DateFormatError(f"{table_name}: column {column_name!r} holds text that is not a 'YYYY-MM-DD' date",
                          table=table_name)


def _split_stamp(table: pa.Table, column: str) -> Tuple[pa.ChunkedArray, pa.ChunkedArray]:
    stamp = table[column]
    return stamp.cast(pa.date32()), stamp.cast(TIME_OF_DAY)


def _conform(columns: Mapping[str, ArrowArray], name: str) -> pa.Table:
    """Build the output table in the declared (processed) schema's order and types."""
    schema = PROCESSED_SCHEMAS[name]
    arrays = []
    for field in schema:
        array = columns[field.name]
        if not field.nullable and array.null_count:
            raise SchemaMismatchError(f"{name}: column {field.name!r} would hold NULL values", table=name)
        arrays.append(array.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _sort(table: pa.Table, name: str) -> pa.Table:
    return table.sort_by([(column, "ascending") for column in WAREHOUSE_KEYS[name]])


# -- facts ---------------------------------------------------------------------------------------

def _fact(source: pa.Table, source_name: str, name: str, renames: Mapping[str, str],
          text_dates: Sequence[str]) -> pa.Table:
    versions = distinct_versions(source, PRIMARY_KEYS[source_name])
    columns = {}
    columns["created_date"], columns["created_time"] = _split_stamp(versions, "created_at")
    columns["last_updated_date"], columns["last_updated_time"] = _split_stamp(versions, "last_updated")
    for column in text_dates:
        columns[column] = text_to_date(versions[column], source_name, column)
    for field in WAREHOUSE_SCHEMAS[name]:
        if field.name not in columns:
            columns[field.name] = versions[renames.get(field.name, field.name)]
    return _sort(_conform(columns, name), name)


def fact_sales_order(sales_order: pa.Table) -> pa.Table:
    """One row per distinct (sales_order_id, last_updated) of the source sales_order rows."""
    return _fact(sales_order, "sales_order", "fact_sales_order", {"sales_staff_id": "staff_id"},
                 ("agreed_payment_date", "agreed_delivery_date"))


def fact_purchase_order(purchase_order: pa.Table) -> pa.Table:
    """One row per distinct (purchase_order_id, last_updated) of the source purchase_order rows."""
    return _fact(purchase_order, "purchase_order", "fact_purchase_order", {},
                 ("agreed_delivery_date", "agreed_payment_date"))


def fact_payment(payment: pa.Table) -> pa.Table:
    """One row per distinct (payment_id, last_updated) of the source payment rows."""
    return _fact(payment, "payment", "fact_payment", {}, ("payment_date",))


# -- dimensions ----------------------------------------------------------------------------------

def dim_date(dates: Union[ArrowArray, Sequence[ArrowArray]]) -> pa.Table:
    """The dim_date rows of the distinct non-null dates in ``dates`` (a date32 array or list of them)."""
    if isinstance(dates, (list, tuple)):
        # The distinct values of each column, then of them all: a list of ChunkedArrays given to
        # pa.chunked_array whole is converted value by value in Python (0.4 s at scale 10).
        dates = pa.chunked_array([pc.unique(d.cast(pa.date32())) for d in dates], type=pa.date32())
    distinct = pc.unique(pc.drop_null(dates))
    if isinstance(distinct, pa.ChunkedArray):
        distinct = distinct.combine_chunks()
    distinct = distinct.cast(pa.date32())
    day_of_week = pc.day_of_week(distinct, count_from_zero=False, week_start=1)
    month = pc.month(distinct)
    columns = {
        "date_id": distinct, "year": pc.year(distinct), "month": month, "day": pc.day(distinct),
        "day_of_week": day_of_week,
        "day_name": pc.take(_DAY_NAMES, pc.subtract(day_of_week, 1)),
        "month_name": pc.take(_MONTH_NAMES, pc.subtract(month, 1)),
        "quarter": pc.quarter(distinct),
    }
    return _sort(_conform(columns, "dim_date"), "dim_date")


def fact_dates(facts: Iterable[pa.Table]) -> List[pa.ChunkedArray]:
    """Every date column of the given fact tables, for dim_date."""
    return [table[field.name] for table in facts for field in table.schema
            if field.type == pa.date32()]


def _copy_columns(source: pa.Table, name: str, renames: Optional[Mapping[str, str]] = None,
                  version: Optional[ArrowArray] = None) -> pa.Table:
    """The dimension ``name`` from ``source``'s columns (renamed), with its version column: the
    source's last_updated unless ``version`` (an array) is given."""
    renames = renames or {}
    columns = {field.name: source[renames.get(field.name, field.name)] for field in WAREHOUSE_SCHEMAS[name]}
    columns[VERSION_COLUMN] = source["last_updated"] if version is None else version
    return _sort(_conform(columns, name), name)


def dim_location(address: pa.Table) -> pa.Table:
    """dim_location (location_id = address_id) from the latest version of each address row."""
    return _copy_columns(latest_rows(address, "address_id"), "dim_location", {"location_id": "address_id"})


def dim_design(design: pa.Table) -> pa.Table:
    """dim_design from the latest version of each design row."""
    return _copy_columns(latest_rows(design, "design_id"), "dim_design")


def dim_payment_type(payment_type: pa.Table) -> pa.Table:
    """dim_payment_type from the latest version of each payment_type row."""
    return _copy_columns(latest_rows(payment_type, "payment_type_id"), "dim_payment_type")


def dim_transaction(transaction: pa.Table) -> pa.Table:
    """dim_transaction from the latest version of each transaction row."""
    return _copy_columns(latest_rows(transaction, "transaction_id"), "dim_transaction")


def dim_currency(currency: pa.Table) -> pa.Table:
    """dim_currency with the ISO 4217 name of each code (placeholder for an unknown code)."""
    latest = latest_rows(currency, "currency_id")
    names = pa.array([currency_name(code) for code in latest["currency_code"].to_pylist()], pa.string())
    return _sort(_conform({"currency_id": latest["currency_id"], "currency_code": latest["currency_code"],
                           "currency_name": names, VERSION_COLUMN: latest["last_updated"]}, "dim_currency"),
                 "dim_currency")


def _join_parent(child: pa.Table, parent: pa.Table, child_key: str, parent_key: str, child_name: str,
                 parent_name: str) -> Tuple[pa.Table, pa.Table]:
    """Inner join of ``parent``'s columns onto ``child``; return (joined rows, rejected records of the
    child rows whose parent no batch has delivered, or whose parent was rejected)."""
    parent = parent.append_column("_matched", pa.array(np.ones(parent.num_rows, dtype=bool)))
    joined = child.join(parent, keys=child_key, right_keys=parent_key, join_type="left outer",
                        right_suffix="_parent", coalesce_keys=True)
    missing = pc.is_null(joined["_matched"])
    if not pc.any(missing).as_py():
        return joined, empty_rejected()
    orphans = joined.filter(missing)
    key = PRIMARY_KEYS[child_name]
    rejected = rejected_records(
        child_name, orphans[key], orphans["last_updated"], child_key,
        [f"references {parent_name} {value}, which no batch has delivered (or which was rejected)"
         for value in orphans[child_key].to_pylist()], orphans[child_key], orphans.select(child.column_names))
    return joined.filter(pc.invert(missing)), rejected


def dim_counterparty(counterparty: pa.Table, address: pa.Table) -> Tuple[pa.Table, pa.Table]:
    """dim_counterparty: each counterparty (latest version) joined to its legal address (latest version).

    Returns (dim_counterparty, rejected records of counterparties whose address is unknown). The version
    of a row is the later last_updated of the counterparty and its address.
    """
    latest = latest_rows(counterparty, "counterparty_id").select(
        ["counterparty_id", "counterparty_legal_name", "legal_address_id", "last_updated"])
    addresses = latest_rows(address, "address_id").drop_columns(["created_at"]).rename_columns(
        {"last_updated": "address_last_updated"})
    joined, rejected = _join_parent(latest, addresses, "legal_address_id", "address_id", "counterparty",
                                    "address")
    version = pc.max_element_wise(joined["last_updated"], joined["address_last_updated"])
    return _copy_columns(joined, "dim_counterparty", {
        "counterparty_legal_address_line_1": "address_line_1",
        "counterparty_legal_address_line_2": "address_line_2",
        "counterparty_legal_district": "district", "counterparty_legal_city": "city",
        "counterparty_legal_postal_code": "postal_code", "counterparty_legal_country": "country",
        "counterparty_legal_phone_number": "phone"}, version), rejected


def dim_staff(staff: pa.Table, department: pa.Table) -> Tuple[pa.Table, pa.Table]:
    """dim_staff: each staff member (latest version) with their department's name and location.

    Returns (dim_staff, rejected records of staff whose department is unknown). A department without
    a location gives '' (dim_staff.location is NOT NULL in the warehouse). The version of a row is the
    later last_updated of the staff member and the department.
    """
    latest = latest_rows(staff, "staff_id").select(
        ["staff_id", "first_name", "last_name", "department_id", "email_address", "last_updated"])
    departments = latest_rows(department, "department_id").select(
        ["department_id", "department_name", "location", "last_updated"]).rename_columns(
        {"last_updated": "department_last_updated"})
    joined, rejected = _join_parent(latest, departments, "department_id", "department_id", "staff",
                                    "department")
    joined = joined.set_column(joined.schema.get_field_index("location"), "location",
                               pc.fill_null(joined["location"], ""))
    version = pc.max_element_wise(joined["last_updated"], joined["department_last_updated"])
    return _copy_columns(joined, "dim_staff", version=version), rejected


# -- one batch -----------------------------------------------------------------------------------

def _rows_referencing(table: pa.Table, column: str, ids: pa.Array) -> pa.Table:
    return table.filter(pc.is_in(table[column], value_set=ids))


def _affected(current: Optional[pa.Table], key: str, changed: Optional[pa.Table], parent_column: str,
              changed_parents: Optional[pa.Array]) -> Optional[pa.Table]:
    """Rows of ``current`` that changed themselves or whose parent (``parent_column``) changed."""
    ids = []
    if changed is not None:
        ids.append(changed[key].combine_chunks())
    if changed_parents is not None and current is not None:
        ids.append(_rows_referencing(current, parent_column, changed_parents)[key].combine_chunks())
    if not ids:
        return None
    wanted = pc.unique(pa.concat_arrays(ids))
    return _rows_referencing(current, key, wanted)


def build_warehouse_batch(batch: Mapping[str, pa.Table], snapshots: Mapping[str, Optional[pa.Table]]
                          ) -> Tuple[Dict[str, pa.Table], Dict[str, pa.Table], pa.Table]:
    """Turn one ingest batch into warehouse rows.

    ``batch``: {source table: pyarrow Table of its changed rows} (absent tables did not change), with
    ``LANDING_SCHEMAS`` (every column nullable).
    ``snapshots``: {table: current state before this batch} for SNAPSHOT_TABLES (absent: empty).
    Returns (warehouse, new_snapshots, rejected): {warehouse table: rows to upsert/append} with empty
    tables left out (schemas ``PROCESSED_SCHEMAS``), {snapshot table: its new state} for the snapshot
    tables this batch changed, and the rejected records (``utils.catalog.formats.REJECTED_SCHEMA``)
    of the rows the warehouse cannot hold. A rejected row is left out of everything, snapshots included (the
    previous version, if any, stays current). A change to an address also re-emits every counterparty
    whose legal address it is; a change to a department re-emits every staff member in it.
    """
    rejected = []
    checked = {}
    for name, table in batch.items():
        checked[name], bad = split_source_rows(name, table)
        rejected.append(bad)
    batch = checked
    new_snapshots = {name: merge_snapshot(snapshots.get(name), batch[name], PRIMARY_KEYS[name])
                     for name in SNAPSHOT_TABLES if name in batch}
    current = {name: new_snapshots.get(name, snapshots.get(name)) for name in SNAPSHOT_TABLES}
    changed_ids = {name: pc.unique(batch[name][PRIMARY_KEYS[name]].combine_chunks())
                   for name in ("address", "department") if name in batch}
    out = {}
    if "address" in batch:
        out["dim_location"] = dim_location(batch["address"])
    counterparties = _affected(current["counterparty"], "counterparty_id", batch.get("counterparty"),
                               "legal_address_id", changed_ids.get("address"))
    if counterparties is not None:
        out["dim_counterparty"], bad = dim_counterparty(counterparties, _require(current, "address"))
        rejected.append(bad)
    staff = _affected(current["staff"], "staff_id", batch.get("staff"),
                      "department_id", changed_ids.get("department"))
    if staff is not None:
        out["dim_staff"], bad = dim_staff(staff, _require(current, "department"))
        rejected.append(bad)
    simple = {"currency": dim_currency, "design": dim_design, "payment_type": dim_payment_type,
              "transaction": dim_transaction, "sales_order": fact_sales_order,
              "purchase_order": fact_purchase_order, "payment": fact_payment}
    for source, build in simple.items():
        if source in batch:
            out[build.__name__] = build(batch[source])
    facts = [out[name] for name in FACTS if name in out]
    if facts:
        out["dim_date"] = dim_date(fact_dates(facts))
    warehouse = {name: out[name] for name in WAREHOUSE_TABLES if name in out and out[name].num_rows}
    return warehouse, new_snapshots, pa.concat_tables([empty_rejected(), *rejected])


def _require(current: Mapping[str, Optional[pa.Table]], name: str) -> pa.Table:
    if current[name] is None:
        return LANDING_SCHEMAS[name].empty_table()
    return current[name]
