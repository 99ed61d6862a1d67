"""End to end on generated data (scale 1): ingest -> transform -> load, then the warehouse is
reconciled with totesys table by table, before and after changes."""
import pytest

import ingest
import load
import transform
from totesys_local.generator import simulate
from tests.support.db import run_sql

pytestmark = pytest.mark.slow

STAMPS = "{t}created_at::date, {t}created_at::time, {t}last_updated::date, {t}last_updated::time"
FACT_STAMPS = "created_date, created_time, last_updated_date, last_updated_time"

# (source query, warehouse query): the same rows, sorted, when the warehouse reconciles.
DIMENSIONS = {
    "dim_location": (
        "SELECT address_id, address_line_1, address_line_2, district, city, postal_code, country, phone "
        "FROM address",
        "SELECT location_id, address_line_1, address_line_2, district, city, postal_code, country, phone "
        "FROM dim_location"),
    "dim_counterparty": (
        "SELECT c.counterparty_id, c.counterparty_legal_name, a.address_line_1, a.address_line_2, "
        "a.district, a.city, a.postal_code, a.country, a.phone FROM counterparty c "
        "JOIN address a ON a.address_id = c.legal_address_id",
        "SELECT counterparty_id, counterparty_legal_name, counterparty_legal_address_line_1, "
        "counterparty_legal_address_line_2, counterparty_legal_district, counterparty_legal_city, "
        "counterparty_legal_postal_code, counterparty_legal_country, counterparty_legal_phone_number "
        "FROM dim_counterparty"),
    "dim_staff": (
        "SELECT s.staff_id, s.first_name, s.last_name, d.department_name, coalesce(d.location, ''), "
        "s.email_address FROM staff s JOIN department d ON d.department_id = s.department_id",
        "SELECT staff_id, first_name, last_name, department_name, location, email_address FROM dim_staff"),
    "dim_currency": ("SELECT currency_id, currency_code FROM currency",
                     "SELECT currency_id, currency_code FROM dim_currency"),
    "dim_design": ("SELECT design_id, design_name, file_location, file_name FROM design",
                   "SELECT design_id, design_name, file_location, file_name FROM dim_design"),
    "dim_payment_type": ("SELECT payment_type_id, payment_type_name::text FROM payment_type",
                         "SELECT payment_type_id, payment_type_name FROM dim_payment_type"),
    "dim_transaction": (
        "SELECT transaction_id, transaction_type::text, sales_order_id, purchase_order_id FROM transaction",
        "SELECT transaction_id, transaction_type, sales_order_id, purchase_order_id FROM dim_transaction"),
}

# The current state of each fact (latest version) against the source table.
CURRENT_FACTS = {
    "sales_order": (
        f"SELECT sales_order_id, {STAMPS.format(t='')}, staff_id, counterparty_id, units_sold, unit_price, "
        "currency_id, design_id, agreed_payment_date::date, agreed_delivery_date::date, "
        "agreed_delivery_location_id FROM sales_order",
        f"SELECT sales_order_id, {FACT_STAMPS}, sales_staff_id, counterparty_id, units_sold, unit_price, "
        "currency_id, design_id, agreed_payment_date, agreed_delivery_date, agreed_delivery_location_id "
        "FROM current_sales_order"),
    "purchase_order": (
        f"SELECT purchase_order_id, {STAMPS.format(t='')}, staff_id, counterparty_id, item_code, "
        "item_quantity, item_unit_price, currency_id, agreed_delivery_date::date, agreed_payment_date::date, "
        "agreed_delivery_location_id FROM purchase_order",
        f"SELECT purchase_order_id, {FACT_STAMPS}, staff_id, counterparty_id, item_code, item_quantity, "
        "item_unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
        "agreed_delivery_location_id FROM current_purchase_order"),
    "payment": (
        f"SELECT payment_id, {STAMPS.format(t='')}, transaction_id, counterparty_id, payment_amount, "
        "currency_id, payment_type_id, paid, payment_date::date FROM payment",
        f"SELECT payment_id, {FACT_STAMPS}, transaction_id, counterparty_id, payment_amount, currency_id, "
        "payment_type_id, paid, payment_date FROM current_payment"),
}

FACT_TABLES = {"sales_order": "fact_sales_order", "purchase_order": "fact_purchase_order",
               "payment": "fact_payment"}

# Every foreign key of the facts: (fact, column, dimension, key).
FACT_KEYS = [(fact, column, "dim_date", "date_id") for fact in FACT_TABLES.values()
             for column in ("created_date", "last_updated_date")] + [
    ("fact_sales_order", "agreed_payment_date", "dim_date", "date_id"),
    ("fact_sales_order", "agreed_delivery_date", "dim_date", "date_id"),
    ("fact_sales_order", "sales_staff_id", "dim_staff", "staff_id"),
    ("fact_sales_order", "counterparty_id", "dim_counterparty", "counterparty_id"),
    ("fact_sales_order", "currency_id", "dim_currency", "currency_id"),
    ("fact_sales_order", "design_id", "dim_design", "design_id"),
    ("fact_sales_order", "agreed_delivery_location_id", "dim_location", "location_id"),
    ("fact_purchase_order", "agreed_payment_date", "dim_date", "date_id"),
    ("fact_purchase_order", "agreed_delivery_date", "dim_date", "date_id"),
    ("fact_purchase_order", "staff_id", "dim_staff", "staff_id"),
    ("fact_purchase_order", "counterparty_id", "dim_counterparty", "counterparty_id"),
    ("fact_purchase_order", "currency_id", "dim_currency", "currency_id"),
    ("fact_purchase_order", "agreed_delivery_location_id", "dim_location", "location_id"),
    ("fact_payment", "payment_date", "dim_date", "date_id"),
    ("fact_payment", "transaction_id", "dim_transaction", "transaction_id"),
    ("fact_payment", "counterparty_id", "dim_counterparty", "counterparty_id"),
    ("fact_payment", "currency_id", "dim_currency", "currency_id"),
    ("fact_payment", "payment_type_id", "dim_payment_type", "payment_type_id"),
]


def rows(url, sql):
    return sorted(tuple(row) for row in run_sql(url, sql))


def source_versions(url):
    """{source table: set of (id, last_updated date, last_updated time)} currently in totesys."""
    sql = "SELECT {table}_id, last_updated::date, last_updated::time FROM {table}"
    return {table: set(rows(url, sql.format(table=table))) for table in FACT_TABLES}


def run_pipeline():
    files = ingest.lambda_handler({}, None)
    transformed = transform.lambda_handler(files, None)
    return files, transformed, load.lambda_handler(transformed, None)


def assert_reconciled(source, warehouse, versions):
    """The warehouse equals the source: dimensions, current facts, money, every version, keys, dates."""
    for name, (source_sql, warehouse_sql) in DIMENSIONS.items():
        assert rows(warehouse, warehouse_sql) == rows(source, source_sql), name
    names = rows(warehouse, "SELECT currency_name FROM dim_currency")
    assert names and all(not name.startswith("Unknown") for (name,) in names)
    for name, (source_sql, warehouse_sql) in CURRENT_FACTS.items():
        assert rows(warehouse, warehouse_sql) == rows(source, source_sql), name
    for table, fact in FACT_TABLES.items():
        recorded = rows(warehouse, f"SELECT {table}_id, last_updated_date, last_updated_time FROM {fact}")
        assert len(recorded) == len(versions[table]), fact  # one row per version, no duplicate
        assert set(recorded) == versions[table], fact
    money = ("SELECT c.currency_code, sum(units_sold * unit_price) FROM {orders} o "
             "JOIN {currencies} c ON c.currency_id = o.currency_id GROUP BY 1")
    assert rows(warehouse, money.format(orders="current_sales_order", currencies="dim_currency")) \
        == rows(source, money.format(orders="sales_order", currencies="currency"))
    for fact, column, dimension, key in FACT_KEYS:
        orphans = run_sql(warehouse, f"SELECT count(*) FROM {fact} f LEFT JOIN {dimension} d "
                          f"ON d.{key} = f.{column} WHERE d.{key} IS NULL")[0][0]
        assert orphans == 0, (fact, column)
    referenced = set()
    for fact in FACT_TABLES.values():
        columns = [row[0] for row in run_sql(
            warehouse, "SELECT column_name FROM information_schema.columns WHERE table_name = :t "
                       "AND data_type = 'date'", t=fact)]
        for column in columns:
            referenced |= {row[0] for row in run_sql(warehouse, f"SELECT DISTINCT {column} FROM {fact}")}
    assert {row[0] for row in run_sql(warehouse, "SELECT date_id FROM dim_date")} == referenced


def table_counts(warehouse):
    names = [row[0] for row in run_sql(
        warehouse, "SELECT table_name FROM information_schema.tables "
                   "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
    return {name: run_sql(warehouse, f"SELECT count(*) FROM {name}")[0][0] for name in names}


def test_scale1_pipeline_reconciles_before_and_after_changes(totesys_url, warehouse_url, pipeline_env):
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    files, transformed, loaded = run_pipeline()
    assert len(files) == 11 and loaded["batches"] == transformed["batches"]
    versions = source_versions(totesys_url)
    assert sum(len(v) for v in versions.values()) > 30_000  # really scale 1
    assert_reconciled(totesys_url, warehouse_url, versions)

    # A simulated half hour of business, then changes of our own (DB clock, so they are the latest).
    simulate(totesys_url, minutes=30, seed=7)
    run_sql(totesys_url, "UPDATE sales_order SET units_sold = 77, unit_price = 3.33, last_updated = now() "
            "WHERE sales_order_id = 5")
    counterparty_id, address_id = run_sql(
        totesys_url, "SELECT counterparty_id, legal_address_id FROM counterparty ORDER BY 1 LIMIT 1")[0]
    run_sql(totesys_url, "UPDATE address SET city = 'Reconcile City', last_updated = now() "
            "WHERE address_id = :id", id=address_id)
    staff_id, department_id = run_sql(
        totesys_url, "SELECT staff_id, department_id FROM staff ORDER BY 1 LIMIT 1")[0]
    run_sql(totesys_url, "UPDATE department SET department_name = 'Renamed', last_updated = now() "
            "WHERE department_id = :id", id=department_id)
    files, transformed, loaded = run_pipeline()
    assert "sales_order" in files and "address" in files and "department" in files
    assert len(loaded["batches"]) == 1
    for table, current in source_versions(totesys_url).items():
        versions[table] |= current
    assert_reconciled(totesys_url, warehouse_url, versions)
    history = run_sql(warehouse_url, "SELECT units_sold, unit_price::text FROM fact_sales_order "
                      "WHERE sales_order_id = 5 ORDER BY sales_record_id")
    assert len(history) == 2 and history[1] == [77, "3.33"] and history[0] != history[1]
    assert run_sql(warehouse_url, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 5") \
        == [[77]]
    assert run_sql(warehouse_url, "SELECT city FROM dim_location WHERE location_id = :id",
                   id=address_id) == [["Reconcile City"]]
    assert run_sql(warehouse_url, "SELECT counterparty_legal_city FROM dim_counterparty "
                   "WHERE counterparty_id = :id", id=counterparty_id) == [["Reconcile City"]]
    assert run_sql(warehouse_url, "SELECT department_name FROM dim_staff WHERE staff_id = :id",
                   id=staff_id) == [["Renamed"]]

    # A run with no changes, and a re-load of what is already loaded, add nothing.
    before = table_counts(warehouse_url)
    nothing_loaded = {"batches": [], "tables": {}, "rejected_rows": 0, "rejected": {}}
    assert run_pipeline() == ({}, {"batches": [], "tables": {}}, nothing_loaded)
    assert load.lambda_handler(transformed, None) == nothing_loaded
    assert table_counts(warehouse_url) == before
