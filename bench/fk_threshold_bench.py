"""Where set-wise foreign-key validation starts to pay (issue 11).

`venv/bin/python -m bench.fk_threshold_bench`.

In a throwaway cluster, a warehouse (the pipeline's own DDL) holds dimensions and ``existing`` rows of
fact_sales_order; an append of ``rows`` staged rows is timed both ways, each in a transaction rolled back:
row by row (PostgreSQL's RI triggers) and set-wise (drop the keys, insert, re-create them: what
utils.load.constraints does across an execution, here within one transaction).
Prints seconds per (existing, rows); the thresholds in utils/load/constraints.py come from these figures.
Not a test: nothing asserts a time.
"""
import sys
import time

from totesys_local.cluster import create_database, temporary_cluster, with_database
from utils.db.connection import connect_to_db, credentials_from_url
from utils.load import constraints
from utils.load.schema import ensure_warehouse_schema

EXISTING = (0, 100_000, 500_000)
APPENDS = (2_000, 10_000, 50_000, 200_000)
FACT_ROWS = ("SELECT :base + g AS a, d.date_id AS b, TIME '10:00' AS c, d.date_id AS e, "
             "TIME '10:00' AS f, "
             "1 + g % 20 AS h, 1 + g % 20 AS i, 100 AS j, 2.5 AS k, 1 + g % 3 AS l, 1 + g % 400 AS m, "
             "d.date_id AS n, d.date_id AS o, 1 + g % 30 AS p "
             "FROM generate_series(1, :rows) g JOIN dim_date d ON d.date_id = DATE '2020-01-01' + g % 2000")
COLUMNS = ("sales_order_id, created_date, created_time, last_updated_date, last_updated_time, "
           "sales_staff_id, counterparty_id, units_sold, unit_price, currency_id, design_id, "
           "agreed_payment_date, "
           "agreed_delivery_date, agreed_delivery_location_id")


def fill_dimensions(conn):
    conn.run("INSERT INTO dim_date SELECT d, 2020, 1, 1, 1, 'Monday', 'January', 1 "
             "FROM generate_series(DATE '2020-01-01', DATE '2026-12-31', '1 day') d")
    conn.run("INSERT INTO dim_staff SELECT g, 'a', 'b', 'c', 'd', 'e' FROM generate_series(1, 20) g")
    conn.run("INSERT INTO dim_counterparty SELECT g, 'n', 'a', NULL, NULL, 'c', 'p', 'x', '1' "
             "FROM generate_series(1, 20) g")
    conn.run("INSERT INTO dim_currency SELECT g, 'GBP', 'Pound' FROM generate_series(1, 3) g")
    conn.run("INSERT INTO dim_design SELECT g, 'd', 'f', 'n' FROM generate_series(1, 400) g")
    conn.run("INSERT INTO dim_location SELECT g, 'a', NULL, NULL, 'c', 'p', 'x', '1' "
             "FROM generate_series(1, 30) g")


def time_append(conn, rows, setwise):
    conn.run("START TRANSACTION")
    conn.run(f"CREATE TEMPORARY TABLE stage ON COMMIT DROP AS {FACT_ROWS}", base=10_000_000, rows=rows)
    started = time.perf_counter()
    keys = constraints.foreign_keys(conn, "fact_sales_order") if setwise else []
    for name, _, _ in keys:
        conn.run(f'ALTER TABLE fact_sales_order DROP CONSTRAINT "{name}"')
    conn.run(f"INSERT INTO fact_sales_order ({COLUMNS}) SELECT * FROM stage")  # nosec B608
    for name, definition, _ in keys:
        conn.run(f'ALTER TABLE fact_sales_order ADD CONSTRAINT "{name}" {definition}')
    seconds = time.perf_counter() - started
    conn.run("ROLLBACK")
    return seconds


def main():
    cluster = temporary_cluster()
    try:
        create_database(cluster.url(), "fk_bench")
        conn = connect_to_db(credentials_from_url(with_database(cluster.url(), "fk_bench")))
        ensure_warehouse_schema(conn)
        fill_dimensions(conn)
        loaded = 0
        print("existing  rows  row-by-row s  set-wise s")
        for existing in EXISTING:
            if existing > loaded:
                conn.run(f"INSERT INTO fact_sales_order ({COLUMNS}) {FACT_ROWS}",  # nosec B608
                         base=loaded, rows=existing - loaded)
                conn.run("ANALYZE fact_sales_order")
                loaded = existing
            for rows in APPENDS:
                row_wise = min(time_append(conn, rows, False) for _ in range(2))
                set_wise = min(time_append(conn, rows, True) for _ in range(2))
                print(f"{existing:>8} {rows:>6} {row_wise:>12.3f} {set_wise:>11.3f}", flush=True)
        conn.close()
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
