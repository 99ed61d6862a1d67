"""The dashboard's charts and tables as HTML (no database): series pivoted with zeros where absent, every
name from the warehouse escaped (a name cannot inject markup or a script), figures kept exact in tables."""
from decimal import Decimal

import pytest

from totesys_local.dashboard import charts
from totesys_local.dashboard.app import table
from tests.support.dashboard_page import parse_page

HOSTILE = '<script>alert(1)</script>"&'


def test_pivot_orders_series_by_name_and_fills_missing_cells_with_zero():
    rows = [{"month": "2023-01", "currency": "USD", "value": Decimal("2.5")},
            {"month": "2023-01", "currency": "GBP", "value": Decimal("1")},
            {"month": "2023-02", "currency": "GBP", "value": Decimal("4")},
            {"month": "2023-02", "currency": "GBP", "value": Decimal("1")}]
    assert charts.pivot(rows, "month", "currency", "value") == (
        ["2023-01", "2023-02"], {"GBP": [1.0, 5.0], "USD": [2.5, 0.0]})


@pytest.mark.parametrize("draw", [charts.column_chart, charts.bar_chart, charts.line_chart])
def test_every_chart_escapes_names_and_draws_one_shape_per_figure(draw):
    svg = draw(HOSTILE, ["Chad", HOSTILE], {"GBP": [1.0, 2.0], HOSTILE: [3.0, 0.0]})
    page = parse_page(f'<section id="section-chart"><h2>t</h2>{svg}</section>')
    assert page.scripts == 0 and "<script>" not in svg and "&lt;script&gt;" in svg
    chart = page.sections["chart"]
    shapes = chart.shapes - (2 if draw is not charts.line_chart else 2 + 2)  # legend squares; polylines
    assert chart.charts == 1 and shapes == 4


def test_an_empty_series_draws_an_empty_axis_not_an_error():
    assert charts.column_chart("none", [], {}).startswith("<svg")


def test_a_table_escapes_text_and_shows_money_with_two_decimals():
    html = table([{"name": HOSTILE, "orders": 1234, "value": Decimal("1234567.1")}],
                 ("name", "orders", "value"), ("value",))
    page = parse_page(f'<section id="section-t"><h2>t</h2>{html}</section>')
    assert page.scripts == 0
    assert page.sections["t"].records() == [{"name": HOSTILE, "orders": "1,234", "value": "1,234,567.10"}]
