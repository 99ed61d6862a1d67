"""The dashboard in a real browser: Debian's chromium driven by Playwright against `totesys dashboard`
serving a warehouse the real pipeline loaded. One browser for the module, one server per warehouse.

`make test` installs chromium when it is missing (Makefile, target chromium). Set
TOTESYS_SCREENSHOT_DIR=docs to refresh the README's screenshots from this run.
"""
import os
import subprocess  # nosec B404 - starts our own CLI
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from totesys_local.cluster import free_port
from tests.support.db import run_sql

# Several seconds each (the state machine, a local run or a generated warehouse): not in make test-fast.
pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("TOTESYS_CHROMIUM", "/usr/bin/chromium")  # `make test` passes CHROMIUM
ROOT = Path(__file__).resolve().parents[2]


def start_dashboard(url, log_path):
    """Start ``totesys dashboard --warehouse URL`` on a free port; return (process, base URL) once
    it answers its health check."""
    port = free_port()
    log = open(log_path, "w")
    process = subprocess.Popen(  # nosec B603 - our own CLI, fixed arguments
        [sys.executable, "-m", "totesys_local.cli", "dashboard", "--warehouse", url, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:  # nosec B310
                if answer.read() == b"ok":
                    return process, base
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the dashboard did not start: {Path(log_path).read_text()[-2000:]}")
        time.sleep(0.2)


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def browser():
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium, as root)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--headless=new"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served(generated_warehouse, tmp_path_factory):
    process, base = start_dashboard(generated_warehouse, tmp_path_factory.mktemp("dash") / "server.log")
    yield base
    stop(process)


@pytest.fixture
def page(browser, served):
    page = browser.new_page(viewport={"width": 1400, "height": 2600})
    page.errors = []
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(served)
    page.locator("#section-payments table").wait_for(timeout=60_000)
    yield page
    page.close()


def shown_metrics(page):
    labels = page.locator(".metric .label").all_inner_texts()
    values = page.locator(".metric .value").all_inner_texts()
    return {label.strip(): value.strip() for label, value in zip(labels, values)}


def table_rows(page, section):
    """The body rows (cells as text) of the table in the section ``section``."""
    rows = page.locator(f"#section-{section} table tbody tr")
    return [[cell.strip() for cell in row.locator("th, td").all_inner_texts()] for row in rows.all()]


def expected_totals(url, currencies=("EUR", "GBP", "USD")):
    found = {}
    for code, orders, value in run_sql(
            url, "SELECT c.currency_code, count(*), sum(units_sold * unit_price) FROM current_sales_order "
                 "JOIN dim_currency c USING (currency_id) WHERE c.currency_code = ANY(:codes) GROUP BY 1",
            codes=list(currencies)):
        found[f"Sales value {code}"] = f"{Decimal(value):,.2f}"
        found[f"Orders {code}"] = f"{orders:,}"
    return found


def sales_metrics(page):
    return {label: value for label, value in shown_metrics(page).items()
            if label.startswith(("Sales value", "Orders"))}


def screenshot(page, name, tmp_path):
    """Full-page screenshot into tmp_path, and into TOTESYS_SCREENSHOT_DIR when set."""
    page.screenshot(path=str(tmp_path / name), full_page=True)
    target = os.environ.get("TOTESYS_SCREENSHOT_DIR")
    if target:
        page.screenshot(path=str(Path(target) / name), full_page=True)
    assert (tmp_path / name).stat().st_size > 10_000


def test_the_page_shows_the_warehouse_figures_and_its_charts(page, generated_warehouse, tmp_path):
    assert sales_metrics(page) == expected_totals(generated_warehouse)
    months = run_sql(generated_warehouse, """
        SELECT to_char(date_trunc('month', created_date), 'YYYY-MM-DD'), c.currency_code, count(*)::text
        FROM current_sales_order JOIN dim_currency c USING (currency_id) GROUP BY 1, 2 ORDER BY 1, 2""")
    assert [row[:3] for row in table_rows(page, "by-month")] == months
    for section in ("pipeline", "by-month", "by-country", "purchases"):
        chart = page.locator(f"#section-{section} svg.chart")
        expect(chart).to_be_visible()
        assert chart.bounding_box()["height"] > 100, section
    # The page's policy lets no script run and the page needs none: the browser reports no violation.
    assert page.evaluate("document.scripts.length") == 0 and page.errors == []
    screenshot(page, "dashboard.png", tmp_path)


def test_the_filter_form_changes_the_figures(page, generated_warehouse, tmp_path):
    page.get_by_label("GBP").check()
    page.get_by_label("USD").check()
    page.get_by_label("Orders created from").fill("2023-01-01")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**/?*currency=USD*")
    page.locator("#section-payments table").wait_for(timeout=30_000)
    where = run_sql(generated_warehouse, """
        SELECT c.currency_code, count(*) FROM current_sales_order JOIN dim_currency c USING (currency_id)
        WHERE created_date >= '2023-01-01' AND c.currency_code IN ('GBP', 'USD') GROUP BY 1 ORDER BY 1""")
    assert {label: value for label, value in sales_metrics(page).items() if label.startswith("Orders")} == {
        f"Orders {code}": f"{orders:,}" for code, orders in where}
    assert {row[1] for row in table_rows(page, "by-month")} == {"GBP", "USD"}
    assert min(row[0] for row in table_rows(page, "by-month")) >= "2023-01-01"
    expect(page.get_by_label("EUR")).not_to_be_checked()
    screenshot(page, "dashboard-filtered.png", tmp_path)


def test_an_invalid_filter_is_shown_as_an_error(page, served):
    page.goto(f"{served}/?start=2023-02-30")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Invalid filter: the start date '2023-02-30' is not a date")
    page.locator("#section-payments table").wait_for(timeout=30_000)


def test_an_empty_warehouse_shows_the_run_hint(browser, new_database, tmp_path):
    process, base = start_dashboard(new_database(), tmp_path / "server.log")
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 500})
        page.goto(base)
        message = page.get_by_role("status")
        expect(message).to_contain_text("The warehouse is empty")
        assert "make run" in message.inner_text()
        assert page.locator("section").count() == 0
        screenshot(page, "dashboard-empty.png", tmp_path)
    finally:
        stop(process)
