"""The dashboard's SQL: read-only, values bound, one consistent snapshot per page.

The sales and payment sections read the rollups the load keeps (``utils.load.rollups``: small aggregates
of the current_* views, per day and currency and, where a section needs it, location, staff member,
design name or payment type), never the fact history, so a page costs the same at any warehouse size.
Names (country, staff, design's for its key, currency code) are joined from the dimensions as they are now.

Every function takes an open connection from ``read_only(url)`` (a ``REPEATABLE READ READ ONLY``
transaction, so all sections of one page see the same warehouse and nothing can be written; a role with
SELECT grants only is enough) and returns a list of dicts, one per row, with plain Python values.
Money is ``Decimal`` (numeric), never summed across currencies.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Dict, Hashable, Iterator, List, Optional, Set, Tuple

from pg8000.native import Connection, identifier

from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.load.rollups import STATE, rollup_state, rollups_current
from utils.metrics import batch_time_from_id

from totesys_local.errors import LocalError

# Where `totesys dashboard` finds the warehouse URL when --warehouse is not given.
URL_VARIABLE = "TOTESYS_WAREHOUSE_URL"
# What a loaded warehouse has (utils/catalog/sql/warehouse_schema.sql); any missing means "not loaded yet".
REQUIRED_RELATIONS = ("dim_currency", "dim_design", "dim_location", "dim_staff", "dim_payment_type",
                      "current_sales_order", "current_purchase_order", "current_payment", "etl_load_ledger")
# Tables other parts of the pipeline add over time: shown only where they exist, grouped by the
# columns among these that they have.
OPTIONAL_TABLES = {"etl_rejected_rows": ("source_table", "reason"),
                   "etl_deleted_rows": ("source_table",)}


class WarehouseUnavailable(LocalError):
    """The warehouse cannot be read; the message is for the dashboard's user (no password in it)."""


@dataclass(frozen=True)
class Filters:
    """What the page's filters select: orders created from ``start`` to ``end`` (inclusive, dates) in
    the ``currencies`` (codes); None means no limit."""
    start: Optional[date] = None
    end: Optional[date] = None
    currencies: Optional[Tuple[str, ...]] = None

    def params(self) -> Dict[str, Any]:
        return {"start": self.start or date(1, 1, 1), "end": self.end or date(9999, 12, 31),
                "all_currencies": self.currencies is None, "currencies": list(self.currencies or ())}


# Each query below filters a rollup ``r`` joined to dim_currency ``c`` with the same literal clause:
#   r.created_date BETWEEN :start AND :end AND (:all_currencies OR c.currency_code = ANY(:currencies))
# (written out, not spliced in: the SQL is constant text and every value is bound).


@contextmanager
def read_only(url: str) -> Iterator[Connection]:
    """Yield a connection inside a read-only, repeatable-read transaction; roll it back at the end.

    Raises WarehouseUnavailable (with a clear message) when the database cannot be reached."""
    try:
        conn = connect_to_db(credentials=credentials_from_url(url))
    except Exception as err:  # noqa: BLE001 - every way of failing becomes one message for the page
        raise WarehouseUnavailable(str(err)) from None
    try:
        conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield conn
    finally:
        try:
            conn.run("ROLLBACK")
        finally:
            close_db_connection(conn)


def _rows(conn: Connection, sql: str, **params: Any) -> List[Dict[str, Any]]:
    result = conn.run(sql, **params)
    names = [column["name"] for column in conn.columns]
    return [dict(zip(names, row)) for row in result]


def relations(conn: Connection) -> Set[str]:
    """Names of the tables and views in the public schema that this role may read (what
    information_schema.tables lists, read from the catalog directly: that view costs tens of ms a page)."""
    return {row[0] for row in conn.run(
        "SELECT c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'p', 'm', 'f') "
        "AND (pg_catalog.pg_has_role(c.relowner, 'USAGE') OR pg_catalog.has_table_privilege(c.oid, "
        "'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'))")}


def status(conn: Connection) -> str:
    """'missing' (the schema is not there), 'empty' (no batch loaded), 'no-rollups' (loaded by an
    older load: the next load builds the rollups) or 'ready'."""
    if not set(REQUIRED_RELATIONS) <= relations(conn):
        return "missing"
    if not conn.run("SELECT EXISTS (SELECT 1 FROM etl_load_ledger)")[0][0]:
        return "empty"
    return "ready" if rollups_current(rollup_state(conn)) else "no-rollups"


def data_version(conn: Connection) -> Tuple[Hashable, ...]:
    """What the figures of a page depend on: (the last loaded batch id, the rollups' revision). Any new
    batch, or a rebuild of the rollups, changes it."""
    return tuple(conn.run(f"SELECT (SELECT max(batch_id) FROM etl_load_ledger), "  # nosec B608
                          f"(SELECT sum(revision)::bigint FROM {identifier(STATE)})")[0])


def filter_choices(conn: Connection) -> Dict[str, Any]:
    """Currencies occurring in the current sales orders and the range of their creation dates:
    ``{"currencies", "first", "last"}``."""
    codes = [row[0] for row in conn.run(
        "SELECT DISTINCT c.currency_code FROM dim_currency c "
        "WHERE EXISTS (SELECT 1 FROM rollup_sales_daily r WHERE r.currency_id = c.currency_id) ORDER BY 1")]
    first, last = conn.run("SELECT min(created_date), max(created_date) FROM rollup_sales_daily")[0]
    return {"currencies": codes, "first": first, "last": last}


def sales_totals(conn: Connection, filters: Filters) -> List[Dict[str, Any]]:
    """Per currency: orders, units and sales value (units x unit price) of the current orders."""
    return _rows(conn, """
        SELECT c.currency_code AS currency, sum(r.orders)::bigint AS orders, sum(r.units)::bigint AS units,
               sum(r.sales_value) AS sales_value
        FROM rollup_sales_daily r JOIN dim_currency c USING (currency_id)
        WHERE r.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1 ORDER BY 1""", **filters.params())


def sales_by_month(conn: Connection, filters: Filters) -> List[Dict[str, Any]]:
    """Per month (first day) and currency: orders and sales value."""
    return _rows(conn, """
        SELECT date_trunc('month', r.created_date)::date AS month, c.currency_code AS currency,
               sum(r.orders)::bigint AS orders, sum(r.sales_value) AS sales_value
        FROM rollup_sales_daily r JOIN dim_currency c USING (currency_id)
        WHERE r.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1, 2 ORDER BY 1, 2""", **filters.params())


def sales_by_country(conn: Connection, filters: Filters) -> List[Dict[str, Any]]:
    """Per delivery country (as dim_location names it now) and currency: orders and sales value,
    largest value first."""
    return _rows(conn, """
        SELECT l.country, c.currency_code AS currency, sum(r.orders)::bigint AS orders,
               sum(r.sales_value) AS sales_value
        FROM rollup_sales_by_location r JOIN dim_currency c USING (currency_id)
        JOIN dim_location l USING (location_id)
        WHERE r.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1, 2 ORDER BY 4 DESC, 1, 2""", **filters.params())


def top_designs(conn: Connection, filters: Filters, limit: int = 10) -> List[Dict[str, Any]]:
    """The ``limit`` designs (by name) selling the most units, with units and value per currency."""
    return _rows(conn, """
        WITH sold AS (
            SELECT r.design_name, c.currency_code, r.units, r.sales_value AS value
            FROM rollup_sales_by_design r JOIN dim_currency c USING (currency_id)
            WHERE r.created_date BETWEEN :start AND :end
              AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))),
        top AS (SELECT design_name, sum(units)::bigint AS units FROM sold GROUP BY 1
                ORDER BY 2 DESC, 1 LIMIT :limit)
        SELECT t.design_name AS design, t.units AS total_units, s.currency_code AS currency,
               sum(s.value) AS sales_value
        FROM top t JOIN sold s USING (design_name)
        GROUP BY 1, 2, 3 ORDER BY 2 DESC, 1, 3""", limit=limit, **filters.params())


def sales_by_staff(conn: Connection, filters: Filters) -> List[Dict[str, Any]]:
    """Per sales staff member (with department, as dim_staff names them now) and currency: orders and
    sales value."""
    return _rows(conn, """
        SELECT s.first_name || ' ' || s.last_name AS staff, s.department_name AS department,
               c.currency_code AS currency, sum(r.orders)::bigint AS orders,
               sum(r.sales_value) AS sales_value
        FROM rollup_sales_by_staff r JOIN dim_currency c USING (currency_id)
        JOIN dim_staff s USING (staff_id)
        WHERE r.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1, 2, 3 ORDER BY 5 DESC, 1, 3""", **filters.params())


def purchases_against_sales(conn: Connection, filters: Filters) -> List[Dict[str, Any]]:
    """Per month and currency: sales value and purchase value (quantity x item unit price)."""
    return _rows(conn, """
        WITH sales AS (
            SELECT date_trunc('month', r.created_date)::date AS month, c.currency_code AS currency,
                   sum(r.sales_value) AS value
            FROM rollup_sales_daily r JOIN dim_currency c USING (currency_id)
            WHERE r.created_date BETWEEN :start AND :end
              AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
            GROUP BY 1, 2),
        purchases AS (
            SELECT date_trunc('month', r.created_date)::date AS month, c.currency_code AS currency,
                   sum(r.purchase_value) AS value
            FROM rollup_purchase_daily r JOIN dim_currency c USING (currency_id)
            WHERE r.created_date BETWEEN :start AND :end
              AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
            GROUP BY 1, 2)
        SELECT month, currency, coalesce(s.value, 0) AS sales_value,
               coalesce(p.value, 0) AS purchase_value
        FROM sales s FULL JOIN purchases p USING (month, currency) ORDER BY 1, 2""", **filters.params())


def payments(conn: Connection, filters: Filters) -> List[Dict[str, Any]]:
    """Per currency and payment type: payments and amounts paid and outstanding (current state)."""
    return _rows(conn, """
        SELECT c.currency_code AS currency, t.payment_type_name AS payment_type,
               coalesce(sum(r.payments) FILTER (WHERE r.paid), 0)::bigint AS paid_payments,
               coalesce(sum(r.amount) FILTER (WHERE r.paid), 0) AS paid_amount,
               coalesce(sum(r.payments) FILTER (WHERE NOT r.paid), 0)::bigint AS outstanding_payments,
               coalesce(sum(r.amount) FILTER (WHERE NOT r.paid), 0) AS outstanding_amount
        FROM rollup_payment_daily r JOIN dim_currency c USING (currency_id)
        JOIN dim_payment_type t USING (payment_type_id)
        WHERE r.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1, 2 ORDER BY 1, 2""", **filters.params())


def pipeline(conn: Connection, now: Optional[datetime] = None, recent: int = 200) -> Dict[str, Any]:
    """The load ledger: ``{"last": {batch_id, batch_time, loaded_at, rows} or None, "lag_seconds",
    "count": batches loaded, "batches": the last ``recent`` [{batch_id, batch_time, loaded_at, rows}, ...]
    (oldest first)}``. The lag is now (the database clock unless ``now`` is given) minus the newest
    batch's upper bound."""
    now = now or conn.run("SELECT now()")[0][0]
    batches = _rows(conn, """
        SELECT batch_id, loaded_at,
               (SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(row_counts)) AS rows
        FROM (SELECT * FROM etl_load_ledger ORDER BY batch_id DESC LIMIT :recent) newest
        ORDER BY batch_id""", recent=recent)
    for batch in batches:
        batch["batch_time"] = batch_time_from_id(batch["batch_id"])
        batch["loaded_at"] = batch["loaded_at"].astimezone(timezone.utc)
    last = batches[-1] if batches else None
    lag = (now - last["batch_time"]).total_seconds() if last else None
    count = conn.run("SELECT count(*) FROM etl_load_ledger")[0][0]
    return {"last": last, "lag_seconds": lag, "count": count, "batches": batches}


def quarantine(conn: Connection) -> Dict[str, List[Dict[str, Any]]]:
    """Rows counted in the optional tables that exist: ``{table: [{<group columns>, rows}, ...]}``;
    a table that does not exist yet is absent."""
    present = relations(conn)
    found = {}
    for table, wanted in OPTIONAL_TABLES.items():
        if table not in present:
            continue
        columns = {row[0] for row in conn.run(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = :table", table=table)}
        group = [identifier(column) for column in wanted if column in columns]
        select = ", ".join(group + ["count(*) AS rows"])
        tail = f" GROUP BY {', '.join(group)} ORDER BY {', '.join(group)}" if group else ""
        sql = f"SELECT {select} FROM {identifier(table)}{tail}"  # nosec B608 - allow-listed identifiers
        found[table] = _rows(conn, sql)
    return found


def money(value: Any) -> str:
    """A money figure as the page shows it: thousands separators, two decimals ('1,234.50')."""
    return f"{Decimal(value):,.2f}"
