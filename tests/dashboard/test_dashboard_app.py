"""The dashboard page (app.render_page, no server, no browser) against a warehouse the real pipeline loaded:
figures equal SQL over the warehouse, every section is there, filters change the figures, bad filters and
empty, missing or unreadable warehouses get a clear message, and the page carries no script."""
from datetime import date, timedelta
from decimal import Decimal

import pg8000
import pytest

from totesys_local.cluster import with_database
from totesys_local.dashboard import queries
from totesys_local.dashboard.app import render_page
from totesys_local.dashboard.cache import PageCache
from totesys_local.dashboard.queries import money
from utils.metrics import batch_time_from_id
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from tests.support.dashboard_page import parse_page
from tests.support.db import run_sql

# Several seconds each (the state machine, a local run or a generated warehouse): not in make test-fast.
pytestmark = pytest.mark.slow

TOTALS = ("SELECT c.currency_code, count(*), sum(units_sold * unit_price) FROM current_sales_order f "
          "JOIN dim_currency c USING (currency_id) {where} GROUP BY 1 ORDER BY 1")
SECTIONS = {"pipeline": "Pipeline", "totals": "Sales value by currency", "by-month": "Sales by month",
            "by-country": "Sales by delivery country", "designs": "Top designs (units sold)",
            "staff": "Sales by staff and department", "purchases": "Purchases against sales",
            "payments": "Payments: paid and outstanding"}


def show(url, status=200, now=None, **query):
    """The page for ``url`` and the filters ``query`` ({name: value or [values]}), as a person reads it;
    asserts its HTTP status."""
    page = render_page(url, {name: value if isinstance(value, list) else [value]
                             for name, value in query.items()}, PageCache(), now=now)
    assert page.status == status, parse_page(page.html).messages
    return parse_page(page.html)


def expected_metrics(url, where="", **params):
    found = {}
    for code, orders, value in run_sql(url, TOTALS.format(where=where), **params):
        found[f"Sales value {code}"] = money(value)
        found[f"Orders {code}"] = f"{orders:,}"
    return found


def sales_metrics(page):
    return {label: value for label, value in page.metrics().items()
            if label.startswith(("Sales value", "Orders"))}


def test_sales_figures_equal_sql_over_the_warehouse(generated_warehouse):
    page = show(generated_warehouse)
    expected = expected_metrics(generated_warehouse)
    assert len(expected) == 6  # GBP, USD and EUR at scale 1
    assert sales_metrics(page) == expected
    by_month = run_sql(generated_warehouse, """
        SELECT to_char(date_trunc('month', created_date), 'YYYY-MM-DD'), c.currency_code, count(*)
        FROM current_sales_order JOIN dim_currency c USING (currency_id) GROUP BY 1, 2 ORDER BY 1, 2""")
    shown = [[row["month"], row["currency"], int(row["orders"].replace(",", ""))]
             for row in page.sections["by-month"].records()]
    assert shown == by_month
    countries = page.sections["by-country"].rows()
    assert len(countries) == run_sql(generated_warehouse, """
        SELECT count(DISTINCT (l.country, f.currency_id)) FROM current_sales_order f
        JOIN dim_location l ON l.location_id = f.agreed_delivery_location_id""")[0][0]


def test_every_section_renders_with_its_figures_and_charts(generated_warehouse):
    page = show(generated_warehouse)
    assert {name: page.sections[name].title for name in SECTIONS} == SECTIONS
    assert not page.messages
    for name in ("by-month", "by-country", "designs", "staff", "purchases", "payments"):
        assert page.sections[name].rows(), name
    for name in ("pipeline", "by-month", "by-country", "purchases"):
        assert page.sections[name].charts == 1 and page.sections[name].shapes > 2, name
    last = run_sql(generated_warehouse, "SELECT max(batch_id) FROM etl_load_ledger")[0][0]
    pipeline = page.sections["pipeline"]
    assert pipeline.metrics["Last loaded batch (UTC)"] == f"{batch_time_from_id(last):%Y-%m-%d %H:%M:%S}"
    assert f"batch {last}; 2 batches loaded" in pipeline.captions[0]
    outstanding = run_sql(generated_warehouse,
                          "SELECT sum(payment_amount) FROM current_payment WHERE NOT paid")
    shown = sum(Decimal(row["outstanding_amount"].replace(",", ""))
                for row in page.sections["payments"].records())
    assert shown == outstanding[0][0] > 0
    # etl_rejected_rows and etl_deleted_rows are part of the warehouse DDL: shown (nothing rejected or
    # deleted).
    assert page.sections["etl_rejected_rows"].captions == ["Rejected rows (etl_rejected_rows): 0"]
    assert page.sections["etl_deleted_rows"].captions == ["Deleted rows (etl_deleted_rows): 0"]


def test_the_page_has_no_script_and_no_inline_style_attribute(generated_warehouse):
    page = show(generated_warehouse)
    assert page.title == "ToteSys warehouse" and page.form_method == "get"
    # The Content-Security-Policy allows only the one style element, by its hash.
    assert (page.scripts, page.style_elements, page.inline_style_attributes) == (0, 1, 0)


def test_filters_change_the_figures(generated_warehouse):
    page = show(generated_warehouse, currency="GBP")
    expected = expected_metrics(generated_warehouse)
    assert sales_metrics(page) == {label: value for label, value in expected.items() if label.endswith("GBP")}
    assert page.checked_currencies == ["GBP"] and page.currencies == ["EUR", "GBP", "USD"]
    assert {row["currency"] for row in page.sections["by-month"].records()} == {"GBP"}

    start, end = date(2023, 1, 1), date(2023, 3, 31)
    page = show(generated_warehouse, currency=["GBP", "USD"], start=str(start), end=str(end))
    where = "WHERE created_date BETWEEN :start AND :end AND c.currency_code IN ('GBP', 'USD')"
    expected = expected_metrics(generated_warehouse, where, start=start, end=end)
    unfiltered = expected_metrics(generated_warehouse)
    assert sales_metrics(page) == expected and expected["Orders GBP"] != unfiltered["Orders GBP"]
    assert page.dates == {"start": "2023-01-01", "end": "2023-03-31"}
    assert {row["month"] for row in page.sections["by-month"].records()} == {
        "2023-01-01", "2023-02-01", "2023-03-01"}


def test_a_range_with_no_orders_says_so(generated_warehouse):
    page = show(generated_warehouse, start="1990-01-01", end="1990-12-31")
    assert page.sections["totals"].messages == [("info", "No orders match the filters.")]
    assert not sales_metrics(page) and not page.sections["by-month"].rows()


@pytest.mark.parametrize("query, complaint", [
    ({"start": "yesterday"}, "the start date 'yesterday' is not a date (YYYY-MM-DD)"),
    ({"end": "2023-02-30"}, "the end date '2023-02-30' is not a date (YYYY-MM-DD)"),
    ({"start": "2023-03-01", "end": "2023-01-01"},
     "the start date 2023-03-01 is after the end date 2023-01-01"),
    ({"currency": ["GBP", "XYZ"]}, "no orders in currency XYZ (the warehouse has EUR, GBP, USD)"),
])
def test_an_invalid_filter_is_named_and_every_order_shown_instead(generated_warehouse, query, complaint):
    page = show(generated_warehouse, status=400, **query)
    assert page.messages == [("error", f"Invalid filter: {complaint}. Showing every order instead.")]
    assert sales_metrics(page) == expected_metrics(generated_warehouse)


def test_the_pipeline_lag_is_measured_against_now_and_warns_past_30_minutes(generated_warehouse):
    newest = run_sql(generated_warehouse, "SELECT max(batch_id) FROM etl_load_ledger")[0][0]
    batch_time = batch_time_from_id(newest)
    fresh = show(generated_warehouse, now=batch_time + timedelta(minutes=5)).sections["pipeline"]
    assert fresh.metrics["Behind now"] == "5 min 0 s" and not fresh.messages
    late = show(generated_warehouse, now=batch_time + timedelta(hours=2, minutes=3)).sections["pipeline"]
    assert late.metrics["Behind now"] == "2 h 3 min"
    assert late.messages == [("warning", "The warehouse is more than 30 minutes behind totesys.")]


def test_an_empty_warehouse_gets_a_friendly_message(new_database):
    page = show(new_database())
    assert len(page.messages) == 1 and page.messages[0][0] == "info"
    assert "warehouse is empty" in page.messages[0][1] and "make run" in page.messages[0][1]
    assert not page.sections


def test_a_warehouse_with_tables_but_no_batch_gets_the_message(new_database):
    url = new_database()
    from utils.load.schema import ensure_warehouse_schema
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        ensure_warehouse_schema(conn)
    finally:
        close_db_connection(conn)
    (kind, text), = show(url).messages
    assert kind == "info" and "no loaded batch yet" in text and "make run" in text


def test_a_missing_database_is_an_error_naming_it(pg_admin_url):
    (kind, text), = show(with_database(pg_admin_url, "no_such_warehouse"), status=503).messages
    assert kind == "error" and "cannot be read" in text and "no_such_warehouse" in text and "make run" in text


def test_no_warehouse_url_is_an_error_naming_the_fix():
    (kind, text), = show(None, status=500).messages
    assert kind == "error" and "--warehouse URL" in text


def test_a_select_only_role_is_enough(generated_warehouse, pg_admin_url):
    role, password = "dash_reader", "reader-pass-1"
    database = generated_warehouse.rsplit("/", 1)[1]
    run_sql(pg_admin_url, f"DROP ROLE IF EXISTS {role}")
    run_sql(pg_admin_url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        run_sql(generated_warehouse, f"REVOKE ALL ON SCHEMA public FROM PUBLIC; "
                                     f"GRANT USAGE ON SCHEMA public TO {role}; "
                                     f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        run_sql(pg_admin_url, f"GRANT CONNECT ON DATABASE {database} TO {role}")
        reader = generated_warehouse.replace("//totesys:", f"//{role}:", 1)
        reader = reader.split("@", 1)
        reader_url = reader[0].rsplit(":", 1)[0] + f":{password}@" + reader[1]
        assert sales_metrics(show(reader_url)) == expected_metrics(generated_warehouse)
        with pytest.raises(pg8000.exceptions.DatabaseError, match="permission denied"):
            run_sql(reader_url, "CREATE TABLE not_allowed (a int)")
    finally:
        run_sql(generated_warehouse, f"DROP OWNED BY {role}")
        run_sql(pg_admin_url, f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_the_dashboard_connection_cannot_write(generated_warehouse):
    with queries.read_only(generated_warehouse) as conn:
        with pytest.raises(pg8000.exceptions.DatabaseError, match="read-only transaction"):
            conn.run("CREATE TABLE not_allowed (a int)")


def test_rejected_and_deleted_rows_show_where_those_tables_exist(
        new_database, warehouse_template):
    url = new_database(template=warehouse_template)
    run_sql(url, "INSERT INTO etl_rejected_rows (source_table, source_id, last_updated, column_name, reason, "
                 "batch_id) VALUES "
                 "('sales_order', 1, now(), 'units_sold', 'overflow', 'b'), "
                 "('sales_order', 2, now(), 'units_sold', 'overflow', 'b'), "
                 "('payment', 3, now(), 'payment_date', 'impossible date', 'b')")
    run_sql(url, "INSERT INTO etl_deleted_rows (source_table, source_id, batch_id) "
                 "VALUES ('payment', 9, 'b')")
    page = show(url)
    assert page.sections["etl_rejected_rows"].captions == ["Rejected rows (etl_rejected_rows): 3"]
    assert page.sections["etl_rejected_rows"].rows() == [["payment", "impossible date", "1"],
                                                         ["sales_order", "overflow", "2"]]
    assert page.sections["etl_deleted_rows"].captions == ["Deleted rows (etl_deleted_rows): 1"]
    assert page.sections["etl_deleted_rows"].rows() == [["payment", "1"]]
    with queries.read_only(url) as conn:
        assert queries.quarantine(conn)["etl_rejected_rows"] == [
            {"source_table": "payment", "reason": "impossible date", "rows": 1},
            {"source_table": "sales_order", "reason": "overflow", "rows": 2}]


def test_pipeline_lag_is_now_minus_the_newest_batch_time(generated_warehouse):
    from datetime import timedelta
    with queries.read_only(generated_warehouse) as conn:
        newest = queries.pipeline(conn)["last"]["batch_time"]
        state = queries.pipeline(conn, now=newest + timedelta(minutes=45))
    assert state["lag_seconds"] == 45 * 60
    assert len(state["batches"]) == 2 and all(batch["rows"] > 0 for batch in state["batches"])


def test_money_is_shown_with_two_decimals():
    assert money(Decimal("1234567.5")) == "1,234,567.50"


def test_a_warehouse_loaded_before_the_rollups_says_the_next_load_builds_them(
        new_database, warehouse_template):
    url = new_database(template=warehouse_template)
    run_sql(url, "DROP TABLE etl_rollup_state")
    (kind, text), = show(url).messages
    assert kind == "info" and "the next load builds them" in text and "make run" in text
