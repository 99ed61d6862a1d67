"""Pure per-table transformations on small hand-written frames."""
from datetime import date, datetime, time
from decimal import Decimal

import pyarrow as pa
import pytest

from utils.catalog.currencies import currency_name
from utils.errors import DateFormatError
from utils.catalog.warehouse import PROCESSED_SCHEMAS, VERSION_COLUMN, WAREHOUSE_SCHEMAS
from utils.transform.star import (build_warehouse_batch, dim_counterparty, dim_currency, dim_date, dim_staff,
                                  fact_payment, fact_purchase_order, fact_sales_order, latest_rows,
                                  merge_snapshot)
from tests.support.batches import (T0, address, base_batch, counterparty, department, later, payment,
                                   purchase_order, sales_order, source_table, staff)


def batch_tables(rows_by_table):
    return {name: source_table(name, rows) for name, rows in rows_by_table.items()}


def test_fact_sales_order_keeps_every_version_once_and_splits_timestamps():
    first = sales_order(7, at=T0)
    update = sales_order(7, at=T0, updated=datetime(2024, 11, 26, 8, 0, 0), units_sold=9)
    rows = [update, first, dict(first)]  # the first version twice (an overlap window)
    fact = fact_sales_order(source_table("sales_order", rows))
    assert fact.schema == WAREHOUSE_SCHEMAS["fact_sales_order"]
    got = fact.to_pylist()
    assert [(r["sales_order_id"], r["last_updated_date"], r["last_updated_time"], r["units_sold"])
            for r in got] == [(7, date(2024, 11, 25), time(9, 30, 15, 123000), 1007),
                              (7, date(2024, 11, 26), time(8, 0, 0), 9)]
    assert got[0]["created_date"] == date(2024, 11, 25)
    assert got[0]["created_time"] == time(9, 30, 15, 123000)
    assert got[0]["sales_staff_id"] == 1
    assert got[0]["unit_price"] == Decimal("2.50")
    assert got[0]["agreed_delivery_date"] == date(2024, 11, 28)
    assert got[0]["agreed_payment_date"] == date(2024, 11, 30)


def test_fact_tables_have_the_declared_schemas():
    purchase = fact_purchase_order(source_table("purchase_order", [purchase_order(1)]))
    paid = fact_payment(source_table("payment", [payment(1, 1, paid=True)]))
    assert purchase.schema == WAREHOUSE_SCHEMAS["fact_purchase_order"]
    assert paid.schema == WAREHOUSE_SCHEMAS["fact_payment"]
    assert paid.column("paid").to_pylist() == [True]
    assert paid.column("payment_date").to_pylist() == [date(2024, 11, 30)]
    assert purchase.column("item_unit_price").to_pylist() == [Decimal("100.00")]


@pytest.mark.parametrize("bad", ["2024-02-30", "30/11/2024", ""])
def test_bad_date_text_names_table_column_and_value(bad):
    rows = [sales_order(1), sales_order(2, agreed_payment_date=bad)]
    with pytest.raises(DateFormatError) as err:
        fact_sales_order(source_table("sales_order", rows))
    assert str(err.value) == (f"sales_order: column 'agreed_payment_date' holds {bad!r}, "
                              "which is not a 'YYYY-MM-DD' date")


def test_latest_rows_keeps_greatest_last_updated_and_later_row_of_a_tie():
    rows = [address(1, at=later(5), city="B"), address(1, at=later(1), city="A"),
            address(2, at=later(1), city="X"), address(2, at=later(1), city="Y")]
    latest = latest_rows(source_table("address", rows), "address_id")
    assert [(r["address_id"], r["city"]) for r in latest.to_pylist()] == [(1, "B"), (2, "Y")]


def test_merge_snapshot_overlays_changes_on_the_previous_state():
    before = source_table("address", [address(1), address(2)])
    changes = source_table("address", [address(2, at=later(3), city="York")])
    merged = merge_snapshot(before, changes, "address_id")
    assert [(r["address_id"], r["city"]) for r in merged.to_pylist()] == [(1, "Leeds"), (2, "York")]


def test_dim_date_iso_weekdays_names_quarters_without_duplicates():
    dates = [pa.array([date(2024, 11, 24), date(2024, 11, 25), None], pa.date32()),
             pa.array([date(2024, 11, 25), date(2025, 1, 1)], pa.date32())]
    table = dim_date(dates)
    assert table.schema == WAREHOUSE_SCHEMAS["dim_date"]
    assert table.to_pylist() == [
        {"date_id": date(2024, 11, 24), "year": 2024, "month": 11, "day": 24, "day_of_week": 7,
         "day_name": "Sunday", "month_name": "November", "quarter": 4},
        {"date_id": date(2024, 11, 25), "year": 2024, "month": 11, "day": 25, "day_of_week": 1,
         "day_name": "Monday", "month_name": "November", "quarter": 4},
        {"date_id": date(2025, 1, 1), "year": 2025, "month": 1, "day": 1, "day_of_week": 3,
         "day_name": "Wednesday", "month_name": "January", "quarter": 1}]


def test_currency_names_and_placeholder_for_unknown_codes():
    assert currency_name("GBP") == "Pound Sterling"
    assert currency_name(" usd ") == "US Dollar"
    assert currency_name("EUR") == "Euro"
    assert currency_name("XQZ") == "Unknown currency (XQZ)"
    assert currency_name(None) == "Unknown currency (None)"
    table = dim_currency(source_table("currency", base_batch()["currency"]))
    assert table.column("currency_name").to_pylist() == ["Pound Sterling", "US Dollar",
                                                         "Unknown currency (XQZ)"]


def test_dim_counterparty_joins_the_legal_address():
    table, rejected = dim_counterparty(
        source_table("counterparty", [counterparty(5, 2, at=later(1))]),
        source_table("address", [address(1), address(2, at=later(2), address_line_2="Unit 5")]))
    assert rejected.num_rows == 0
    assert table.schema == PROCESSED_SCHEMAS["dim_counterparty"]
    # the version of a row built from two source rows is the later of the two
    assert table.column(VERSION_COLUMN).to_pylist() == [later(2)]
    row = table.to_pylist()[0]
    assert row["counterparty_id"] == 5
    assert row["counterparty_legal_address_line_1"] == "2 High Street"
    assert row["counterparty_legal_address_line_2"] == "Unit 5"
    assert row["counterparty_legal_district"] is None
    assert row["counterparty_legal_phone_number"] == "0113 000 0002"


def test_dim_counterparty_with_an_unknown_address_is_rejected_and_the_others_kept():
    table, rejected = dim_counterparty(source_table("counterparty", [counterparty(5, 9), counterparty(6, 1)]),
                                       source_table("address", [address(1)]))
    assert table.column("counterparty_id").to_pylist() == [6]
    assert rejected.drop_columns(["value_key"]).to_pylist() == [{
        "source_table": "counterparty", "source_id": 5, "last_updated": T0, "column_name": "legal_address_id",
        "reason": "references address 9, which no batch has delivered (or which was rejected)", "value": "9"}]
    # the value key tells the versions of one stamp apart (docs/RELIABILITY.md defect 16): the same row
    # read again has the same, a name changed under the same stamp another
    no_address = source_table("address", [])
    again = dim_counterparty(source_table("counterparty", [counterparty(5, 9)]), no_address)[1]
    renamed = dim_counterparty(
        source_table("counterparty", [counterparty(5, 9, counterparty_legal_name="X")]), no_address)[1]
    assert again["value_key"].to_pylist() == rejected["value_key"].to_pylist()
    assert renamed["value_key"].to_pylist() != rejected["value_key"].to_pylist()
    assert None not in rejected["value_key"].to_pylist() + renamed["value_key"].to_pylist()


def test_dim_staff_takes_department_name_and_location():
    table, rejected = dim_staff(source_table("staff", [staff(1, 2), staff(2, 1)]),
                                source_table("department", [department(1, location=None), department(2)]))
    assert rejected.num_rows == 0
    assert table.to_pylist() == [
        {"staff_id": 1, "first_name": "First1", "last_name": "Last", "department_name": "Dept 2",
         "location": "Manchester", "email_address": "first1.last@terrifictotes.com", VERSION_COLUMN: T0},
        {"staff_id": 2, "first_name": "First2", "last_name": "Last", "department_name": "Dept 1",
         "location": "", "email_address": "first2.last@terrifictotes.com", VERSION_COLUMN: T0}]


def test_first_batch_builds_all_eleven_tables():
    warehouse, snapshots, rejected = build_warehouse_batch(batch_tables(base_batch()), {})
    assert rejected.num_rows == 0
    assert sorted(warehouse) == sorted(WAREHOUSE_SCHEMAS)
    assert sorted(snapshots) == ["address", "counterparty", "department", "staff"]
    for name, table in warehouse.items():
        assert table.schema == PROCESSED_SCHEMAS[name], name
    referenced = {d for name in ("fact_sales_order", "fact_purchase_order", "fact_payment")
                  for field in WAREHOUSE_SCHEMAS[name] if field.type == pa.date32()
                  for d in warehouse[name].column(field.name).to_pylist()}
    assert set(warehouse["dim_date"].column("date_id").to_pylist()) == referenced
    assert warehouse["dim_date"].num_rows == len(referenced)


def test_address_change_reemits_every_counterparty_using_it():
    _, snapshots, _ = build_warehouse_batch(batch_tables(base_batch()), {})
    moved = address(1, at=later(10), address_line_1="1 New Road", city="York")
    warehouse, new_snapshots, _ = build_warehouse_batch(batch_tables({"address": [moved]}), snapshots)
    assert sorted(warehouse) == ["dim_counterparty", "dim_location"]
    assert warehouse["dim_location"].to_pylist()[0]["city"] == "York"
    assert [(r["counterparty_id"], r["counterparty_legal_city"])
            for r in warehouse["dim_counterparty"].to_pylist()] == [(1, "York"), (3, "York")]
    assert sorted(new_snapshots) == ["address"]
    assert new_snapshots["address"].num_rows == 2


def test_department_change_reemits_its_staff_and_staff_change_uses_the_snapshot():
    _, snapshots, _ = build_warehouse_batch(batch_tables(base_batch()), {})
    renamed = department(1, at=later(10), department_name="Sales", location="Leds")
    warehouse, _, _ = build_warehouse_batch(batch_tables({"department": [renamed]}), snapshots)
    assert sorted(warehouse) == ["dim_staff"]
    assert [(r["staff_id"], r["department_name"], r["location"])
            for r in warehouse["dim_staff"].to_pylist()] == [(1, "Sales", "Leds"), (3, "Sales", "Leds")]
    moved = staff(2, 1, at=later(11), last_name="Moved")
    warehouse, _, _ = build_warehouse_batch(batch_tables({"staff": [moved]}), snapshots)
    assert warehouse["dim_staff"].to_pylist()[0]["department_name"] == "Dept 1"


def test_orders_only_batch_touches_facts_and_dates_only():
    _, snapshots, _ = build_warehouse_batch(batch_tables(base_batch()), {})
    update = sales_order(1, at=T0, updated=later(60), unit_price=Decimal("3.99"))
    warehouse, new_snapshots, _ = build_warehouse_batch(batch_tables({"sales_order": [update]}), snapshots)
    assert sorted(warehouse) == ["dim_date", "fact_sales_order"]
    assert new_snapshots == {}
    assert warehouse["fact_sales_order"].column("unit_price").to_pylist() == [Decimal("3.99")]
