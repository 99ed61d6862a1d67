"""CDC test helpers (no tests)."""
from urllib.parse import quote, urlsplit, urlunsplit

from tests.support.db import run_sql

CURRENT = {"sales_order": "current_sales_order", "purchase_order": "current_purchase_order",
           "payment": "current_payment"}
FACTS = {"sales_order": "fact_sales_order", "purchase_order": "fact_purchase_order",
         "payment": "fact_payment"}


def url_as(url, user, password):
    """``url`` with another user and password."""
    parts = urlsplit(url)
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def slot_row(url, name):
    """(confirmed_flush_lsn, wal_status) of slot ``name`` or None."""
    rows = run_sql(url, "SELECT confirmed_flush_lsn::text, wal_status FROM pg_replication_slots "
                        "WHERE slot_name = :n", n=name)
    return tuple(rows[0]) if rows else None


def assert_warehouse_exact(source, warehouse):
    """Each current fact view holds exactly the source's rows at their latest version, no version of a fact
    is stored twice, and the staff and location dimensions equal the source."""
    for table, view in CURRENT.items():
        expected = sorted(tuple(row) for row in run_sql(
            source, f"SELECT {table}_id, last_updated::date, last_updated::time FROM {table}"))
        found = sorted(tuple(row) for row in run_sql(
            warehouse, f"SELECT {table}_id, last_updated_date, last_updated_time FROM {view}"))
        assert found == expected, view
    for table, fact in FACTS.items():
        total, distinct = run_sql(warehouse, f"SELECT count(*), count(DISTINCT ({table}_id, "
                                             f"last_updated_date, last_updated_time)) FROM {fact}")[0]
        assert total == distinct, fact
    staff = sorted(tuple(row) for row in run_sql(source, "SELECT staff_id, first_name, last_name FROM staff"))
    assert sorted(tuple(row) for row in run_sql(
        warehouse, "SELECT staff_id, first_name, last_name FROM dim_staff")) == staff
    locations = sorted(tuple(row) for row in run_sql(source, "SELECT address_id, city FROM address"))
    assert sorted(tuple(row) for row in run_sql(warehouse, "SELECT location_id, city FROM dim_location")) \
        == locations
