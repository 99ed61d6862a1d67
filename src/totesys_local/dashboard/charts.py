"""The dashboard's charts as inline SVG, drawn on the server: no script, no external file, nothing for the
page's Content-Security-Policy to allow (colours and sizes are SVG presentation attributes, not styles).

Each function takes plain values and returns an SVG element as text, every label escaped. Each shape has a
``<title>`` (the browser shows it as a tooltip) carrying its exact figure. Series are keyed by name (a
currency code, "sales GBP"...) and coloured from one fixed palette in the order given, with a legend.
"""
import math
from html import escape
from typing import Dict, List, Mapping, Sequence, Tuple

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'
LABEL_SPACING = 80  # pixels between two category labels on an axis: a YYYY-MM-DD fits


def _colours(series: Sequence[str]) -> Dict[str, str]:
    return {name: PALETTE[number % len(PALETTE)] for number, name in enumerate(series)}


def _figure(value: float) -> str:
    """A short axis figure: 1.2M, 35k, 950."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _legend(colours: Mapping[str, str], x: int, y: int) -> List[str]:
    parts = []
    for number, (name, colour) in enumerate(colours.items()):
        left = x + number * 110
        parts.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + 14}" y="{y}" {FONT}>{escape(name)}</text>')
    return parts


def _svg(width: int, height: int, label: str, parts: List[str]) -> str:
    return (f'<svg class="chart" role="img" aria-label="{escape(label)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'<title>{escape(label)}</title>{"".join(parts)}</svg>')


def column_chart(label: str, categories: Sequence[str], series: Mapping[str, Sequence[float]],
                 width: int = 900, height: int = 260) -> str:
    """Grouped vertical bars: one group per category (a month, a batch), one bar per series in it.
    ``series``: {name: values, one per category}. As many categories are labelled as fit."""
    colours = _colours(list(series))
    top = max([value for values in series.values() for value in values] + [0]) or 1
    left, bottom, plot_height = 50, 40, height - 70
    group = (width - left - 10) / max(len(categories), 1)
    bar = min(max(group * 0.8 / max(len(series), 1), 1), 40)
    parts = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
             'stroke="#999"/>',
             f'<text x="{left - 4}" y="{height - bottom - plot_height + 4}" text-anchor="end" {FONT}>'
             f'{_figure(top)}</text>',
             f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" {FONT}>0</text>']
    step = max(1, math.ceil(LABEL_SPACING / group))
    for index, category in enumerate(categories):
        x0 = left + index * group + group * 0.1
        for number, (name, values) in enumerate(series.items()):
            value = values[index]
            bar_height = max(plot_height * value / top, 0)
            parts.append(f'<rect x="{x0 + number * bar:.1f}" y="{height - bottom - bar_height:.1f}" '
                         f'width="{bar:.1f}" height="{bar_height:.1f}" fill="{colours[name]}">'
                         f'<title>{escape(f"{category} {name}: {value:,.2f}")}</title></rect>')
        if index % step == 0:
            parts.append(f'<text x="{x0:.1f}" y="{height - bottom + 14}" {FONT}>{escape(category)}</text>')
    return _svg(width, height, label, parts + _legend(colours, left, height - 6))


def bar_chart(label: str, categories: Sequence[str], series: Mapping[str, Sequence[float]],
              width: int = 900) -> str:
    """Stacked horizontal bars, one row per category (a country), a segment per series."""
    colours = _colours(list(series))
    totals = [sum(values[index] for values in series.values()) for index in range(len(categories))]
    top = max(totals + [0]) or 1
    left, row = 170, 16
    plot_width = width - left - 80
    height = 30 + row * len(categories)
    parts = []
    for index, category in enumerate(categories):
        y, x = 4 + index * row, float(left)
        parts.append(f'<text x="{left - 6}" y="{y + 11}" text-anchor="end" {FONT}>{escape(category)}</text>')
        for name, values in series.items():
            segment = plot_width * values[index] / top
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{max(segment, 0):.1f}" height="{row - 4}" '
                         f'fill="{colours[name]}"><title>{escape(f"{category} {name}: {values[index]:,.2f}")}'
                         '</title></rect>')
            x += max(segment, 0)
        parts.append(f'<text x="{x + 4:.1f}" y="{y + 11}" {FONT}>{_figure(totals[index])}</text>')
    return _svg(width, height, label, parts + _legend(colours, left, height - 6))


def line_chart(label: str, categories: Sequence[str], series: Mapping[str, Sequence[float]],
               width: int = 900, height: int = 260) -> str:
    """One polyline per series over the categories (months), a dot with its figure on each point."""
    colours = _colours(list(series))
    top = max([value for values in series.values() for value in values] + [0]) or 1
    left, bottom, plot_height = 50, 40, height - 70
    step_x = (width - left - 20) / max(len(categories) - 1, 1)
    parts = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
             'stroke="#999"/>',
             f'<text x="{left - 4}" y="{height - bottom - plot_height + 4}" text-anchor="end" {FONT}>'
             f'{_figure(top)}</text>']
    for name, values in series.items():
        points = [(left + index * step_x, height - bottom - plot_height * value / top)
                  for index, value in enumerate(values)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colours[name]}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colours[name]}">'
                  f'<title>{escape(f"{category} {name}: {value:,.2f}")}</title></circle>'
                  for (x, y), category, value in zip(points, categories, values)]
    labelled = max(1, math.ceil(LABEL_SPACING / step_x))
    parts += [f'<text x="{left + index * step_x:.1f}" y="{height - bottom + 14}" text-anchor="middle" {FONT}>'
              f'{escape(category)}</text>' for index, category in enumerate(categories)
              if index % labelled == 0]
    return _svg(width, height, label, parts + _legend(colours, left, height - 6))


def pivot(rows: Sequence[Mapping], category: str, series: str,
          value: str) -> Tuple[List[str], Dict[str, List[float]]]:
    """(categories in first-seen order, {series name: [value per category, 0 where absent]}) of ``rows``
    (dicts), each value as a float (chart geometry only: tables keep the exact Decimal). Series in name
    order, so that a currency has the same colour in every chart."""
    categories: Dict[str, None] = {}
    names: Dict[str, None] = {}
    cells: Dict[tuple, float] = {}
    for row in rows:
        key, name = str(row[category]), str(row[series])
        categories.setdefault(key)
        names.setdefault(name)
        cells[key, name] = cells.get((key, name), 0.0) + float(row[value])
    return list(categories), {name: [cells.get((key, name), 0.0) for key in categories]
                              for name in sorted(names)}
