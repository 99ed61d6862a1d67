"""The dashboard app without a browser (Streamlit's AppTest) against a warehouse the real pipeline loaded:
figures equal SQL over the warehouse, filters change them, empty/missing warehouses get a message."""
from datetime import date
from decimal import Decimal
from pathlib import Path

import pg8000
import pytest
from streamlit.testing.v1 import AppTest

from totesys_local.cluster import with_database
from totesys_local.dashboard import queries
from totesys_local.dashboard.queries import Filters, money
from utils.metrics import batch_time_from_id
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from tests.support.db import run_sql

# Several seconds each (the state machine, a local run or a generated warehouse): not in make test-fast.
pytestmark = pytest.mark.slow

APP = Path(queries.__file__).with_name("app.py")

TOTALS = ("SELECT c.currency_code, count(*), sum(units_sold * unit_price) FROM current_sales_order f "
          "JOIN dim_currency c USING (currency_id) {where} GROUP BY 1 ORDER BY 1")


def run_app(monkeypatch, url):
    if url:
        monkeypatch.setenv(queries.URL_VARIABLE, url)
    else:
        monkeypatch.delenv(queries.URL_VARIABLE, raising=False)
    app = AppTest.from_file(str(APP), default_timeout=60)
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def metrics_of(app):
    return {metric.label: metric.value for metric in app.metric}


def expected_metrics(url, where="", **params):
    found = {}
    for code, orders, value in run_sql(url, TOTALS.format(where=where), **params):
        found[f"Sales value {code}"] = money(value)
        found[f"Orders {code}"] = f"{orders:,}"
    return found


def test_sales_figures_equal_sql_over_the_warehouse(generated_warehouse, monkeypatch):
    app = run_app(monkeypatch, generated_warehouse)
    shown = metrics_of(app)
    expected = expected_metrics(generated_warehouse)
    assert len(expected) == 6  # GBP, USD and EUR at scale 1
    assert {label: shown[label] for label in expected} == expected
    by_month = run_sql(generated_warehouse, """
        SELECT to_char(date_trunc('month', created_date), 'YYYY-MM-DD'), c.currency_code, count(*)
        FROM current_sales_order JOIN dim_currency c USING (currency_id) GROUP BY 1, 2 ORDER BY 1, 2""")
    table = app.table[[t for t in range(len(app.table)) if "currency" in app.table[t].value.columns
                       and app.table[t].value.index.name == "month"][0]].value
    shown_months = [[month, row["currency"], int(row["orders"])] for month, row in table.iterrows()]
    assert shown_months == by_month


def test_every_section_renders(generated_warehouse, monkeypatch):
    app = run_app(monkeypatch, generated_warehouse)
    titles = {header.value for header in app.subheader}
    assert titles == {"Pipeline", "Sales value by currency", "Sales by month", "Sales by delivery country",
                      "Top designs (units sold)", "Sales by staff and department", "Purchases against sales",
                      "Payments: paid and outstanding"}
    with queries.read_only(generated_warehouse) as conn:
        last = run_sql(generated_warehouse, "SELECT max(batch_id) FROM etl_load_ledger")[0][0]
        shown = metrics_of(app)["Last loaded batch (UTC)"]
        assert shown == f"{batch_time_from_id(last):%Y-%m-%d %H:%M:%S}"
        assert f"batch {last}; 2 batches loaded" in app.caption[0].value
        paid = queries.payments(conn, Filters())
    outstanding = run_sql(generated_warehouse,
                          "SELECT sum(payment_amount) FROM current_payment WHERE NOT paid")
    assert sum(row["outstanding_amount"] for row in paid) == outstanding[0][0] > 0
    # etl_rejected_rows and etl_deleted_rows are part of the warehouse DDL: shown (nothing rejected or
    # deleted).
    assert "Rejected rows (etl_rejected_rows): 0" in [c.value for c in app.caption]
    assert "Deleted rows (etl_deleted_rows): 0" in [c.value for c in app.caption]


def test_filters_change_the_figures(generated_warehouse, monkeypatch):
    app = run_app(monkeypatch, generated_warehouse)
    app.multiselect(key="currencies").set_value(["GBP"]).run()
    shown = metrics_of(app)
    assert [label for label in shown if label.startswith("Sales value")] == ["Sales value GBP"]
    assert shown["Sales value GBP"] == expected_metrics(generated_warehouse)["Sales value GBP"]

    start, end = date(2023, 1, 1), date(2023, 3, 31)
    app.date_input(key="dates").set_value((start, end)).run()
    where = "WHERE created_date BETWEEN :start AND :end AND c.currency_code = 'GBP'"
    expected = expected_metrics(generated_warehouse, where, start=start, end=end)
    shown = metrics_of(app)
    unfiltered = metrics_of(run_app(monkeypatch, generated_warehouse))
    assert shown["Orders GBP"] == expected["Orders GBP"] != unfiltered["Orders GBP"]
    assert shown["Sales value GBP"] == expected["Sales value GBP"]

    app.multiselect(key="currencies").set_value([]).run()
    assert not [label for label in metrics_of(app) if label.startswith("Sales value")]
    assert "No orders match the filters." in [info.value for info in app.info]


def test_an_empty_warehouse_gets_a_friendly_message(new_database, monkeypatch):
    app = run_app(monkeypatch, new_database())
    messages = [info.value for info in app.info]
    assert len(messages) == 1 and "warehouse is empty" in messages[0] and "make run" in messages[0]
    assert not app.metric


def test_a_warehouse_with_tables_but_no_batch_gets_the_message(new_database, monkeypatch):
    url = new_database()
    from utils.load.schema import ensure_warehouse_schema
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        ensure_warehouse_schema(conn)
    finally:
        close_db_connection(conn)
    messages = [info.value for info in run_app(monkeypatch, url).info]
    assert "no loaded batch yet" in messages[0] and "make run" in messages[0]


def test_a_missing_database_gets_a_friendly_message(pg_admin_url, monkeypatch):
    app = run_app(monkeypatch, with_database(pg_admin_url, "no_such_warehouse"))
    messages = [info.value for info in app.info]
    assert "cannot be read yet" in messages[0] and "make run" in messages[0]
    assert "no_such_warehouse" in messages[0]


def test_no_warehouse_url_is_an_error_naming_the_fix(monkeypatch):
    app = run_app(monkeypatch, None)
    assert "--warehouse URL" in app.error[0].value


def test_a_select_only_role_is_enough(generated_warehouse, pg_admin_url, monkeypatch):
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
        app = run_app(monkeypatch, reader_url)
        assert metrics_of(app) | expected_metrics(generated_warehouse) == metrics_of(app)
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
        new_database, warehouse_template, monkeypatch):
    url = new_database(template=warehouse_template)
    run_sql(url, "INSERT INTO etl_rejected_rows (source_table, source_id, last_updated, column_name, reason, "
                 "batch_id) VALUES "
                 "('sales_order', 1, now(), 'units_sold', 'overflow', 'b'), "
                 "('sales_order', 2, now(), 'units_sold', 'overflow', 'b'), "
                 "('payment', 3, now(), 'payment_date', 'impossible date', 'b')")
    run_sql(url, "INSERT INTO etl_deleted_rows (source_table, source_id, batch_id) "
                 "VALUES ('payment', 9, 'b')")
    app = run_app(monkeypatch, url)
    captions = [caption.value for caption in app.caption]
    assert "Rejected rows (etl_rejected_rows): 3" in captions
    assert "Deleted rows (etl_deleted_rows): 1" in captions
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
        new_database, warehouse_template, monkeypatch):
    url = new_database(template=warehouse_template)
    run_sql(url, "DROP TABLE etl_rollup_state")
    messages = [info.value for info in run_app(monkeypatch, url).info]
    assert len(messages) == 1 and "the next load builds them" in messages[0] and "make run" in messages[0]
