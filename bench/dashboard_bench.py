"""Dashboard benchmark: how long each section of the dashboard takes on a warehouse at scale 10.

``run(ctx)`` takes ``{"source_url": seeded totesys, "admin_url": server admin URL}``, loads a new
warehouse database with the real pipeline (ingest -> transform -> load in a child process, moto
in-process there), then times, in one read-only transaction like the page's, each section's queries
(best of 3, milliseconds) and the whole page rendered by Streamlit's AppTest (best of 3).
Standalone: ``venv/bin/python -m bench.dashboard_bench`` (throwaway cluster, scale BENCH_SCALE,
default 10). Not a test: nothing here asserts a time; the goal is under 1 s per section.
"""
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path


def _load_child(source_url, warehouse_url):
    from bench.transform_load_bench import _aws_child_setup
    _aws_child_setup(source_url, warehouse_url)
    import ingest
    import load
    import transform
    load.lambda_handler(transform.lambda_handler(ingest.lambda_handler({}, None), None), None)


def _best_ms(action, repeat=3):
    best = None
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        elapsed = (time.perf_counter() - started) * 1000
        best = elapsed if best is None else min(best, elapsed)
    return round(best, 1)


def section_timings(url):
    """{section: best-of-3 milliseconds of its queries} in one read-only transaction."""
    from totesys_local.dashboard import queries
    filters = queries.Filters()
    sections = {
        "filters": lambda conn: queries.filter_choices(conn),
        "pipeline": lambda conn: (queries.pipeline(conn), queries.quarantine(conn)),
        "totals": lambda conn: queries.sales_totals(conn, filters),
        "by_month": lambda conn: queries.sales_by_month(conn, filters),
        "by_country": lambda conn: queries.sales_by_country(conn, filters),
        "top_designs": lambda conn: queries.top_designs(conn, filters),
        "by_staff": lambda conn: queries.sales_by_staff(conn, filters),
        "purchases_vs_sales": lambda conn: queries.purchases_against_sales(conn, filters),
        "payments": lambda conn: queries.payments(conn, filters),
    }
    with queries.read_only(url) as conn:
        return {name: _best_ms(lambda: section(conn)) for name, section in sections.items()}


def page_ms(url):
    """Best of 3: the whole page (all sections, charts and tables) rendered by AppTest."""
    from streamlit.testing.v1 import AppTest

    from totesys_local.dashboard import queries
    os.environ[queries.URL_VARIABLE] = url
    app_path = str(Path(queries.__file__).with_name("app.py"))

    def render():
        app = AppTest.from_file(app_path, default_timeout=120)
        app.run()
        if app.exception:
            raise RuntimeError(app.exception[0].message)
    return _best_ms(render)


def run(ctx):
    from totesys_local.cluster import create_database, with_database
    name = f"bench_dashboard_{uuid.uuid4().hex[:8]}"
    create_database(ctx["admin_url"], name)
    url = with_database(ctx["admin_url"], name)
    child = multiprocessing.get_context("spawn").Process(target=_load_child, args=(ctx["source_url"], url))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"bench: loading the dashboard's warehouse failed (exit {child.exitcode})")
    from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        fact_rows = {table: conn.run(f"SELECT count(*) FROM {table}")[0][0]  # nosec B608 - fixed names
                     for table in ("fact_sales_order", "fact_purchase_order", "fact_payment")}
    finally:
        close_db_connection(conn)
    sections = section_timings(url)
    results = {"fact_rows": fact_rows, "section_query_ms": sections,
               "slowest_section_ms": max(sections.values()), "page_apptest_ms": page_ms(url)}
    print(f"dashboard: slowest section {results['slowest_section_ms']} ms, whole page (AppTest) "
          f"{results['page_apptest_ms']} ms", flush=True)
    return results


def main():
    from bench.bench import seeded_cluster
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with seeded_cluster() as ctx:
        print(run(ctx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
