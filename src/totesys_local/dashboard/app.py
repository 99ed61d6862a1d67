"""The ToteSys dashboard page: sales from the warehouse, and how fresh it is, as one server-rendered HTML
page (tables, and inline SVG charts from ``charts``); no script at all.

``render_page(url, query, cache)`` is the whole page for the warehouse at ``url`` and the page's query
string (the filter form is a GET form: ``start``, ``end`` as YYYY-MM-DD, ``currency`` repeated; none
ticked means every currency). It only ever reads (``queries``). Each section is a ``<section
id="section-<name>">`` so that tests (and users' bookmarks) can find it. The sections' figures come from
the load's rollups and are cached per warehouse data version (the last loaded batch id and the rollups'
revision, ``cache.PageCache``), shared by every request of one server. Problems are part of the page,
never a traceback: a warehouse that cannot be read (503), one not loaded yet, a filter that is not valid
(400, the page then shows every order and says so).
"""
import base64
import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timezone
from html import escape
from typing import Any, Callable, List, Mapping, Optional, Sequence

from pg8000.native import Connection

from totesys_local.dashboard import charts, queries
from totesys_local.dashboard.cache import PageCache
from totesys_local.dashboard.queries import Filters, money

RECENT_BATCHES = 200
RUN_HINT = "Run <code>make run</code> to load the warehouse, then reload this page."
TITLE = "ToteSys warehouse"
STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:12px 24px}h1{margin:0;font-size:22px}
main{display:flex;gap:24px;padding:16px 24px;align-items:flex-start}
form{flex:0 0 220px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;position:sticky;
top:8px}
form label{display:block;margin:6px 0}form fieldset{border:none;padding:0;margin:8px 0}
button{margin-top:8px;padding:4px 14px}.content{flex:1;min-width:0}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 16px 16px;margin-bottom:16px}
h2{font-size:17px;margin:8px 0}table{border-collapse:collapse;font-size:13px}
.scroll{max-height:340px;overflow:auto;margin-top:8px;display:inline-block;border:1px solid #eee}
thead th{position:sticky;top:0}
th,td{border-bottom:1px solid #eee;padding:3px 10px;text-align:left}td.n,th.n{text-align:right}
thead th{background:#f3f3f3}.metrics{display:flex;flex-wrap:wrap;gap:12px}
.metric{border:1px solid #e3e3e3;border-radius:6px;padding:6px 12px;min-width:150px}
.metric .label{font-size:12px;color:#555}.metric .value{font-size:22px}
.message{border-radius:6px;padding:10px 14px;margin:12px 24px}
.info{background:#e8f1fb;border:1px solid #9cc3ea}
.warning{background:#fff4e0;border:1px solid #f0b45c}.error{background:#fdecea;border:1px solid #e99}
.caption{font-size:12px;color:#555}svg.chart{max-width:100%;height:auto;display:block}
"""
# The page's only inline content is the style element above: the policy allows it by its hash, no script
# at all, nothing from elsewhere, and the filter form may only submit to this server.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'; "
    "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class Page:
    """A rendered page: the HTTP status and the HTML document."""
    status: int
    html: str


class FilterError(ValueError):
    """A filter in the query string is not valid; the message is for the page."""


# -- filters --------------------------------------------------------------------------------------------

def _date(query: Mapping[str, Sequence[str]], name: str, default: Optional[date]) -> Optional[date]:
    values = [value for value in query.get(name, []) if value.strip()]
    if not values:
        return default
    try:
        return date.fromisoformat(values[-1].strip())
    except ValueError:
        raise FilterError(f"the {name} date {values[-1]!r} is not a date (YYYY-MM-DD)") from None


def parse_filters(query: Mapping[str, Sequence[str]], choices: Mapping) -> Filters:
    """The Filters of a query string ({name: [values]}, as ``urllib.parse.parse_qs`` gives) against the
    warehouse's ``choices`` (filter_choices). Raises FilterError for a date that is not one, a start after
    the end, or a currency the warehouse's orders do not have."""
    start = _date(query, "start", choices["first"])
    end = _date(query, "end", choices["last"])
    if start and end and start > end:
        raise FilterError(f"the start date {start} is after the end date {end}")
    picked = tuple(dict.fromkeys(query.get("currency", [])))
    unknown = [code for code in picked if code not in choices["currencies"]]
    if unknown:
        raise FilterError(f"no orders in currency {', '.join(unknown)} (the warehouse has "
                          f"{', '.join(choices['currencies']) or 'none'})")
    return Filters(start=start, end=end, currencies=picked or None)


def filter_form(choices: Mapping, filters: Filters) -> str:
    """The GET form of the filters, showing ``filters``."""
    first, last = choices["first"], choices["last"]
    bounds = "".join(f' {name}="{value}"' for name, value in (("min", first), ("max", last)) if value)
    boxes = "".join(
        f'<label><input type="checkbox" name="currency" value="{escape(code)}"'
        f'{" checked" if filters.currencies and code in filters.currencies else ""}> {escape(code)}</label>'
        for code in choices["currencies"])
    return ('<form method="get" action="/" id="filters"><h2>Filters</h2>'
            f'<label>Orders created from<br><input type="date" name="start" value="{filters.start or ""}"'
            f'{bounds}></label>'
            f'<label>to<br><input type="date" name="end" value="{filters.end or ""}"{bounds}></label>'
            f'<fieldset><legend>Currencies (none ticked: all)</legend>{boxes}</fieldset>'
            '<button type="submit">Apply</button> <a href="/">Reset</a></form>')


# -- building blocks ------------------------------------------------------------------------------------

def message(kind: str, html: str) -> str:
    """A message box: ``kind`` is info, warning or error; ``html`` is already escaped."""
    return f'<div class="message {kind}" role="{"alert" if kind == "error" else "status"}">{html}</div>'


def table(rows: Sequence[Mapping], columns: Sequence[str], money_columns: Sequence[str] = ()) -> str:
    """``rows`` as an HTML table of ``columns`` (headers are the column names); money with two decimals,
    other numbers with thousands separators, right-aligned. A long table scrolls in its own box."""
    head = "".join(f'<th{" class=n" if column in money_columns else ""}>{escape(column)}</th>'
                   for column in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            if column in money_columns:
                cells.append(f'<td class="n">{money(value)}</td>')
            elif isinstance(value, int) and not isinstance(value, bool):
                cells.append(f'<td class="n">{value:,}</td>')
            else:
                cells.append(f"<td>{escape(str(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


def metric(label: str, value: str) -> str:
    return (f'<div class="metric"><div class="label">{escape(label)}</div>'
            f'<div class="value">{escape(value)}</div></div>')


def section(key: str, title: str, body: str) -> str:
    return f'<section id="section-{key}"><h2>{escape(title)}</h2>{body}</section>'


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    return " ".join(parts + [f"{hours} h {minutes} min" if hours or days else f"{minutes} min {seconds} s"])


# -- the sections ---------------------------------------------------------------------------------------

Fetch = Callable[..., list]


def section_pipeline(state: Mapping, quarantine: Mapping, now: datetime) -> str:
    """The ledger's newest batch, how far behind now it is, rows per recent batch, rejected/deleted rows."""
    last = state["last"]
    lag = (now - last["batch_time"]).total_seconds()
    parts = ['<div class="metrics">',
             metric("Last loaded batch (UTC)", f"{last['batch_time']:%Y-%m-%d %H:%M:%S}"),
             metric("Loaded at (UTC)", f"{last['loaded_at']:%Y-%m-%d %H:%M:%S}"),
             metric("Behind now", _duration(lag)), "</div>",
             f'<p class="caption">batch {escape(last["batch_id"])}; {state["count"]:,} batches loaded; '
             "'behind now' is now minus the batch's upper bound (its batch time)</p>"]
    if lag > 30 * 60:
        parts.append(message("warning", "The warehouse is more than 30 minutes behind totesys."))
    recent = state["batches"]
    parts.append(f'<p class="caption">Rows loaded per batch (etl_load_ledger, the last {len(recent)})</p>')
    parts.append(charts.column_chart("Rows loaded per batch",
                                     [f"{batch['batch_time']:%Y-%m-%d %H:%M}" for batch in recent],
                                     {"rows": [float(batch["rows"]) for batch in recent]}, height=200))
    titles = {"etl_rejected_rows": "Rejected rows", "etl_deleted_rows": "Deleted rows"}
    for name, rows in quarantine.items():
        parts.append(f'<div id="section-{name}"><p class="caption">{titles[name]} ({name}): '
                     f'{sum(row["rows"] for row in rows):,}</p>')
        if rows and len(rows[0]) > 1:
            parts.append(table(rows, list(rows[0])))
        parts.append("</div>")
    return section("pipeline", "Pipeline", "".join(parts))


def section_totals(fetch: Fetch, filters: Filters) -> str:
    totals = fetch(queries.sales_totals, filters)
    if not totals:
        return section("totals", "Sales value by currency", message("info", "No orders match the filters."))
    cards = "".join(metric(f"Sales value {row['currency']}", money(row["sales_value"]))
                    + metric(f"Orders {row['currency']}", f"{row['orders']:,}") for row in totals)
    return section("totals", "Sales value by currency", f'<div class="metrics">{cards}</div>')


def section_by_month(fetch: Fetch, filters: Filters) -> str:
    rows = fetch(queries.sales_by_month, filters)
    chart = charts.column_chart("Sales value by month and currency",
                                *charts.pivot(rows, "month", "currency", "sales_value")) if rows else ""
    return section("by-month", "Sales by month",
                   chart + table(rows, ("month", "currency", "orders", "sales_value"), ("sales_value",)))


def section_by_country(fetch: Fetch, filters: Filters) -> str:
    rows = fetch(queries.sales_by_country, filters)
    chart = charts.bar_chart("Sales value by delivery country and currency",
                             *charts.pivot(rows, "country", "currency", "sales_value")) if rows else ""
    return section("by-country", "Sales by delivery country",
                   chart + table(rows, ("country", "currency", "orders", "sales_value"), ("sales_value",)))


def section_designs(fetch: Fetch, filters: Filters) -> str:
    rows = fetch(queries.top_designs, filters)
    return section("designs", "Top designs (units sold)",
                   table(rows, ("design", "total_units", "currency", "sales_value"), ("sales_value",)))


def section_staff(fetch: Fetch, filters: Filters) -> str:
    rows = fetch(queries.sales_by_staff, filters)
    return section("staff", "Sales by staff and department",
                   table(rows, ("staff", "department", "currency", "orders", "sales_value"),
                         ("sales_value",)))


def section_purchases(fetch: Fetch, filters: Filters) -> str:
    rows = fetch(queries.purchases_against_sales, filters)
    chart = ""
    if rows:
        long = [{"month": row["month"], "series": f"{kind} {row['currency']}", "value": row[f"{kind}_value"]}
                for row in rows for kind in ("sales", "purchase")]
        chart = charts.line_chart("Sales and purchase value by month",
                                  *charts.pivot(long, "month", "series", "value"))
    return section("purchases", "Purchases against sales",
                   chart + table(rows, ("month", "currency", "sales_value", "purchase_value"),
                                 ("sales_value", "purchase_value")))


def section_payments(fetch: Fetch, filters: Filters) -> str:
    rows = fetch(queries.payments, filters)
    return section("payments", "Payments: paid and outstanding",
                   table(rows, ("currency", "payment_type", "paid_payments", "paid_amount",
                                "outstanding_payments", "outstanding_amount"),
                         ("paid_amount", "outstanding_amount")))


SALES_SECTIONS = (section_totals, section_by_month, section_by_country, section_designs, section_staff,
                  section_purchases, section_payments)


# -- the page -------------------------------------------------------------------------------------------

def document(body: str, aside: str = "") -> str:
    """The HTML document around ``body`` (and the filter form ``aside``)."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{TITLE}</title><style>{STYLE}</style></head>'
            f'<body><header><h1>{TITLE}</h1></header>{body if not aside else ""}'
            + (f'<main>{aside}<div class="content">{body}</div></main>' if aside else "")
            + "</body></html>")


def _sections(conn: Connection, url: str, query: Mapping[str, Sequence[str]], cache: PageCache,
              now: Optional[datetime]) -> Page:
    state = queries.status(conn)
    if state == "no-rollups":
        return Page(200, document(message(
            "info", "The warehouse was loaded by an older version of the load, without the dashboard's "
                    f"rollups: the next load builds them. {RUN_HINT}")))
    if state != "ready":
        what = "has no tables yet" if state == "missing" else "has no loaded batch yet"
        return Page(200, document(message("info", f"The warehouse is empty: it {what}. {RUN_HINT}")))
    version = queries.data_version(conn)

    def fetch(query_function: Callable[..., Any], *args: Any) -> Any:
        return cache.get(url, version, (query_function.__name__, args), lambda: query_function(conn, *args))

    choices = fetch(queries.filter_choices)
    notes: List[str] = []
    status = 200
    try:
        filters = parse_filters(query, choices)
    except FilterError as err:
        status, filters = 400, Filters(start=choices["first"], end=choices["last"])
        notes.append(message("error", f"Invalid filter: {escape(str(err))}. Showing every order instead."))
    # The ledger's figures are cached with the rest; the lag is measured against now at each request.
    pipeline = fetch(queries.pipeline, None, RECENT_BATCHES)
    parts = notes + [section_pipeline(pipeline, fetch(queries.quarantine),
                                      now or datetime.now(timezone.utc))]
    # the sales sections' HTML depends only on the data version and the filters: rendered once per both
    parts.append(cache.get(url, version, ("sales sections", filters), lambda: "".join(
        render(fetch, filters) for render in SALES_SECTIONS)))
    return Page(status, document("".join(parts), filter_form(choices, filters)))


def render_page(url: Optional[str], query: Optional[Mapping[str, Sequence[str]]] = None,
                cache: Optional[PageCache] = None, now: Optional[datetime] = None) -> Page:
    """The dashboard page for the warehouse at ``url`` and the query string ``query`` ({name: [values]}),
    figures through ``cache`` (a new one when None). ``now`` (UTC; default: the clock) is what the
    pipeline's lag is measured against. Never raises for the warehouse's or the query's sake."""
    if not url:
        return Page(500, document(message(
            "error", "No warehouse given: start the dashboard with <code>totesys dashboard --warehouse URL"
                     f"</code> or set {queries.URL_VARIABLE}.")))
    try:
        with queries.read_only(url) as conn:
            return _sections(conn, url, query or {}, cache if cache is not None else PageCache(), now)
    except queries.WarehouseUnavailable as err:
        return Page(503, document(message(
            "error", f"The warehouse cannot be read ({escape(str(err))}). {RUN_HINT}")))
