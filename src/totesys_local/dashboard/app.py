"""The ToteSys dashboard (a Streamlit script): sales from the warehouse, and how fresh it is.

Run it with ``totesys dashboard`` (or ``make dashboard``); it reads the warehouse URL from the
environment variable ``TOTESYS_WAREHOUSE_URL`` and only ever reads (totesys_local.dashboard.queries).
Each section sits in a container keyed ``section-<name>`` so that tests (and users' bookmarks) can find it.
The sections' figures come from the load's rollups and are cached per warehouse data version (the last
loaded batch id and the rollups' revision, ``totesys_local.dashboard.cache``), shared by all sessions.
"""
import os
from datetime import date

import pandas as pd
import streamlit as st

from totesys_local.dashboard import queries
from totesys_local.dashboard.cache import PageCache
from totesys_local.dashboard.queries import URL_VARIABLE, Filters, money

RECENT_BATCHES = 200
RUN_HINT = "Run `make run` to load the warehouse, then reload this page."


@st.cache_resource
def page_cache():
    """The one PageCache of this dashboard server."""
    return PageCache()


def _table(rows, columns, money_columns=()):
    """Show ``rows`` as a static HTML table (figures as text, money with two decimals)."""
    frame = pd.DataFrame(rows, columns=list(columns))
    for column in money_columns:
        frame[column] = frame[column].map(money)
    for column in frame.columns:
        if column not in money_columns and frame[column].dtype == object:
            frame[column] = frame[column].astype(str)
    st.table(frame.set_index(frame.columns[0]))


def _pivot(rows, index, value="sales_value"):
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame[value] = frame[value].astype(float)
    return frame.pivot_table(index=index, columns="currency", values=value, aggfunc="sum").fillna(0)


def sidebar_filters(choices):
    """The filters: a date range over order creation dates and the currencies."""
    st.sidebar.header("Filters")
    first, last = choices["first"] or date.today(), choices["last"] or date.today()
    picked = st.sidebar.date_input("Orders created between", value=(first, last), min_value=first,
                                   max_value=last, key="dates")
    start, end = (tuple(picked) + (None, None))[:2] if isinstance(picked, (tuple, list)) else (picked, None)
    currencies = st.sidebar.multiselect("Currencies", choices["currencies"],
                                        default=choices["currencies"], key="currencies")
    return Filters(start=start, end=end or start, currencies=tuple(currencies))


def section_totals(fetch, filters):
    with st.container(key="section-totals"):
        st.subheader("Sales value by currency")
        totals = fetch(queries.sales_totals, filters)
        if not totals:
            st.info("No orders match the filters.")
            return
        columns = st.columns(len(totals))
        for column, row in zip(columns, totals):
            column.metric(f"Sales value {row['currency']}", money(row["sales_value"]))
            column.metric(f"Orders {row['currency']}", f"{row['orders']:,}")


def section_by_month(fetch, filters):
    with st.container(key="section-by-month"):
        st.subheader("Sales by month")
        rows = fetch(queries.sales_by_month, filters)
        if rows:
            st.bar_chart(_pivot(rows, "month"))
        _table(rows, ("month", "currency", "orders", "sales_value"), ("sales_value",))


def section_by_country(fetch, filters):
    with st.container(key="section-by-country"):
        st.subheader("Sales by delivery country")
        rows = fetch(queries.sales_by_country, filters)
        if rows:
            st.bar_chart(_pivot(rows, "country"), horizontal=True)
        _table(rows, ("country", "currency", "orders", "sales_value"), ("sales_value",))


def section_designs(fetch, filters):
    with st.container(key="section-designs"):
        st.subheader("Top designs (units sold)")
        rows = fetch(queries.top_designs, filters)
        _table(rows, ("design", "total_units", "currency", "sales_value"), ("sales_value",))


def section_staff(fetch, filters):
    with st.container(key="section-staff"):
        st.subheader("Sales by staff and department")
        rows = fetch(queries.sales_by_staff, filters)
        _table(rows, ("staff", "department", "currency", "orders", "sales_value"), ("sales_value",))


def section_purchases(fetch, filters):
    with st.container(key="section-purchases"):
        st.subheader("Purchases against sales")
        rows = fetch(queries.purchases_against_sales, filters)
        if rows:
            frame = pd.DataFrame(rows)
            lines = {}
            for kind in ("sales_value", "purchase_value"):
                frame[kind] = frame[kind].astype(float)
                wide = frame.pivot_table(index="month", columns="currency", values=kind, aggfunc="sum")
                for currency in wide.columns:
                    lines[f"{kind.split('_')[0]} {currency}"] = wide[currency]
            st.line_chart(pd.DataFrame(lines).fillna(0))
        _table(rows, ("month", "currency", "sales_value", "purchase_value"),
               ("sales_value", "purchase_value"))


def section_payments(fetch, filters):
    with st.container(key="section-payments"):
        st.subheader("Payments: paid and outstanding")
        rows = fetch(queries.payments, filters)
        _table(rows, ("currency", "payment_type", "paid_payments", "paid_amount", "outstanding_payments",
                      "outstanding_amount"), ("paid_amount", "outstanding_amount"))


def _duration(seconds):
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    return " ".join(parts + [f"{hours} h {minutes} min" if hours or days else f"{minutes} min {seconds} s"])


def section_pipeline(conn):
    with st.container(key="section-pipeline"):
        st.subheader("Pipeline")
        state = queries.pipeline(conn, recent=RECENT_BATCHES)
        last = state["last"]
        left, middle, right = st.columns(3)
        left.metric("Last loaded batch (UTC)", f"{last['batch_time']:%Y-%m-%d %H:%M:%S}")
        middle.metric("Loaded at (UTC)", f"{last['loaded_at']:%Y-%m-%d %H:%M:%S}")
        right.metric("Behind now", _duration(state["lag_seconds"]))
        st.caption(f"batch {last['batch_id']}; {state['count']:,} batches loaded; "
                   "'behind now' is now minus the batch's upper bound (its batch time)")
        if state["lag_seconds"] > 30 * 60:
            st.warning("The warehouse is more than 30 minutes behind totesys.")
        recent = state["batches"]
        frame = pd.DataFrame({"batch time": [f"{b['batch_time']:%Y-%m-%d %H:%M:%S}" for b in recent],
                              "rows": [int(b["rows"]) for b in recent]})
        st.caption(f"Rows loaded per batch (etl_load_ledger, the last {len(recent)})")
        st.bar_chart(frame.set_index("batch time"))
        for table, rows in queries.quarantine(conn).items():
            title = {"etl_rejected_rows": "Rejected rows", "etl_deleted_rows": "Deleted rows"}[table]
            with st.container(key=f"section-{table}"):
                st.caption(f"{title} ({table}): {sum(row['rows'] for row in rows):,}")
                if rows and len(rows[0]) > 1:
                    _table(rows, list(rows[0]))


def render(url):
    """Render the whole page for the warehouse at ``url``."""
    st.title("ToteSys warehouse")
    if not url:
        st.error(f"No warehouse given: start the dashboard with `totesys dashboard --warehouse URL` "
                 f"or set {URL_VARIABLE}.")
        return
    try:
        with queries.read_only(url) as conn:
            state = queries.status(conn)
            if state == "no-rollups":
                st.info("The warehouse was loaded by an older version of the load, without the dashboard's "
                        f"rollups: the next load builds them. {RUN_HINT}", icon="ℹ️")
                return
            if state != "ready":
                what = "has no tables yet" if state == "missing" else "has no loaded batch yet"
                st.info(f"The warehouse is empty: it {what}. {RUN_HINT}", icon="ℹ️")
                return
            version = queries.data_version(conn)

            def fetch(query, *args):
                return page_cache().get(url, version, (query.__name__, args), lambda: query(conn, *args))

            filters = sidebar_filters(fetch(queries.filter_choices))
            section_pipeline(conn)
            section_totals(fetch, filters)
            section_by_month(fetch, filters)
            section_by_country(fetch, filters)
            section_designs(fetch, filters)
            section_staff(fetch, filters)
            section_purchases(fetch, filters)
            section_payments(fetch, filters)
    except queries.WarehouseUnavailable as err:
        st.info(f"The warehouse cannot be read yet ({err}). {RUN_HINT}", icon="ℹ️")


st.set_page_config(page_title="ToteSys warehouse", layout="wide")
render(os.environ.get(URL_VARIABLE))
