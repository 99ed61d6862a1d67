"""Test helpers (no tests): the dashboard's sections computed straight from the current_* views and the
fact history, as the dashboard computed them before it read rollups (issue 25). The oracle the rollup-backed
queries (totesys_local.dashboard.queries) must equal on any warehouse."""


def _rows(conn, sql, **params):
    result = conn.run(sql, **params)
    names = [column["name"] for column in conn.columns]
    return [dict(zip(names, row)) for row in result]


def filter_choices(conn):
    """Currencies occurring in the current sales orders and the range of their creation dates."""
    codes = [row[0] for row in conn.run(
        "SELECT DISTINCT c.currency_code FROM dim_currency c "
        "WHERE EXISTS (SELECT 1 FROM current_sales_order f WHERE f.currency_id = c.currency_id) ORDER BY 1")]
    first, last = conn.run("SELECT min(created_date), max(created_date) FROM current_sales_order")[0]
    return {"currencies": codes, "first": first, "last": last}


def sales_totals(conn, filters):
    """Per currency: orders, units and sales value (units x unit price) of the current orders."""
    return _rows(conn, """
        SELECT c.currency_code AS currency, count(*) AS orders, sum(f.units_sold) AS units,
               sum(f.units_sold * f.unit_price) AS sales_value
        FROM current_sales_order f JOIN dim_currency c USING (currency_id)
        WHERE f.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1 ORDER BY 1""", **filters.params())


def sales_by_month(conn, filters):
    """Per month (first day) and currency: orders and sales value."""
    return _rows(conn, """
        SELECT date_trunc('month', f.created_date)::date AS month, c.currency_code AS currency,
               count(*) AS orders, sum(f.units_sold * f.unit_price) AS sales_value
        FROM current_sales_order f JOIN dim_currency c USING (currency_id)
        WHERE f.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1, 2 ORDER BY 1, 2""", **filters.params())


def sales_by_country(conn, filters):
    """Per delivery country and currency: orders and sales value, largest value first."""
    return _rows(conn, """
        SELECT l.country, c.currency_code AS currency, count(*) AS orders,
               sum(f.units_sold * f.unit_price) AS sales_value
        FROM current_sales_order f JOIN dim_currency c USING (currency_id)
        JOIN dim_location l ON l.location_id = f.agreed_delivery_location_id
        WHERE f.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1, 2 ORDER BY 4 DESC, 1, 2""", **filters.params())


def top_designs(conn, filters, limit=10):
    """The ``limit`` designs (by name) selling the most units, with units and value per currency."""
    return _rows(conn, """
        WITH sold AS (
            SELECT d.design_name, c.currency_code, f.units_sold, f.units_sold * f.unit_price AS value
            FROM current_sales_order f JOIN dim_currency c USING (currency_id)
            JOIN dim_design d USING (design_id)
            WHERE f.created_date BETWEEN :start AND :end
              AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))),
        top AS (SELECT design_name, sum(units_sold) AS units FROM sold GROUP BY 1
                ORDER BY 2 DESC, 1 LIMIT :limit)
        SELECT t.design_name AS design, t.units AS total_units, s.currency_code AS currency,
               sum(s.value) AS sales_value
        FROM top t JOIN sold s USING (design_name)
        GROUP BY 1, 2, 3 ORDER BY 2 DESC, 1, 3""", limit=limit, **filters.params())


def sales_by_staff(conn, filters):
    """Per sales staff member (with department) and currency: orders and sales value."""
    return _rows(conn, """
        SELECT s.first_name || ' ' || s.last_name AS staff, s.department_name AS department,
               c.currency_code AS currency, count(*) AS orders,
               sum(f.units_sold * f.unit_price) AS sales_value
        FROM current_sales_order f JOIN dim_currency c USING (currency_id)
        JOIN dim_staff s ON s.staff_id = f.sales_staff_id
        WHERE f.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1, 2, 3 ORDER BY 5 DESC, 1, 3""", **filters.params())


def purchases_against_sales(conn, filters):
    """Per month and currency: sales value and purchase value (quantity x item unit price)."""
    return _rows(conn, """
        WITH sales AS (
            SELECT date_trunc('month', f.created_date)::date AS month, c.currency_code AS currency,
                   sum(f.units_sold * f.unit_price) AS value
            FROM current_sales_order f JOIN dim_currency c USING (currency_id)
            WHERE f.created_date BETWEEN :start AND :end
              AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
            GROUP BY 1, 2),
        purchases AS (
            SELECT date_trunc('month', f.created_date)::date AS month, c.currency_code AS currency,
                   sum(f.item_quantity * f.item_unit_price) AS value
            FROM current_purchase_order f JOIN dim_currency c USING (currency_id)
            WHERE f.created_date BETWEEN :start AND :end
              AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
            GROUP BY 1, 2)
        SELECT month, currency, coalesce(s.value, 0) AS sales_value,
               coalesce(p.value, 0) AS purchase_value
        FROM sales s FULL JOIN purchases p USING (month, currency) ORDER BY 1, 2""", **filters.params())


def payments(conn, filters):
    """Per currency and payment type: payments and amounts paid and outstanding (current state)."""
    return _rows(conn, """
        SELECT c.currency_code AS currency, t.payment_type_name AS payment_type,
               count(*) FILTER (WHERE f.paid) AS paid_payments,
               coalesce(sum(f.payment_amount) FILTER (WHERE f.paid), 0) AS paid_amount,
               count(*) FILTER (WHERE NOT f.paid) AS outstanding_payments,
               coalesce(sum(f.payment_amount) FILTER (WHERE NOT f.paid), 0) AS outstanding_amount
        FROM current_payment f JOIN dim_currency c USING (currency_id)
        JOIN dim_payment_type t USING (payment_type_id)
        WHERE f.created_date BETWEEN :start AND :end
          AND (:all_currencies OR c.currency_code = ANY(CAST(:currencies AS varchar[])))
        GROUP BY 1, 2 ORDER BY 1, 2""", **filters.params())
