"""Dashboard benchmark (issue 25): each section's SQL, the whole page's SQL, the page rendered by the server
(``app.render_page``) and in a real Chromium, and what keeping the rollups costs the load per batch.

``run(ctx)`` takes ``{"source_url": seeded totesys, "admin_url": server admin URL}``, loads a new
warehouse database with the real pipeline (ingest -> transform -> load in a child process, moto
in-process there), then an incremental batch (30 simulated minutes of business), timing each batch's
load and, inside it, the rollups' share (``utils.load.rollups``: a fill on the first batch, the delta
after). Then ``measure(url)``: in one read-only transaction like the page's, each section's queries and
the whole page's (status, data version, filters, pipeline, every section), best of 3, milliseconds; the
page rendered by ``render_page`` in this process (the first render computes, later ones hit the dashboard's
cache) and in Debian's chromium through Playwright against ``totesys dashboard`` (the server's first page,
new visits served from its cache, and a filtered page submitted through the form).
Standalone: ``venv/bin/python -m bench.dashboard_bench`` (throwaway cluster, scale BENCH_SCALE,
default 10; BENCH_INCREMENTAL_ROUNDS incremental batches after the first, default 1; BENCH_LOAD_ONLY=1
times the load alone, not the page). Not a test: nothing here asserts a time. Targets: each section
<= 0.2 s, page SQL <= 1 s, page in chromium <= 2 s, rollups <= 5% of a batch's load.
"""
import multiprocessing
import os
import subprocess  # nosec B404 - starts our own CLI
import sys
import time
import urllib.request
import uuid
from pathlib import Path

CHROMIUM = os.environ.get("TOTESYS_CHROMIUM", "/usr/bin/chromium")


def instrument_load():
    """Time every batch's load and the rollups' share of it in this process; return the list that
    collects ``{"load_s", "rollups_s", "fill"}`` per batch loaded (and, under "replay", what
    ``replay_rollups`` needs: the call's arguments and the rollups' state before it)."""
    import utils.load.merge as merge
    import utils.load.rollups as rollups
    import utils.load.run as load_run
    batches = []
    load_batch, update_rollups, rebuild = load_run.load_batch, merge.update_rollups, rollups.rebuild_rollups

    def timed_load(*args, **kwargs):
        batches.append({"fill": False})
        started = time.perf_counter()
        result = load_batch(*args, **kwargs)
        batches[-1]["load_s"] = round(time.perf_counter() - started - batches[-1].pop("capture_s", 0), 3)
        return result

    def timed_rollups(*args, **kwargs):
        started = time.perf_counter()  # the capture for replay_rollups is left out of the load's time
        state = args[0].run("SELECT fact_table, last_record_id, max_id FROM etl_rollup_state") \
            if rollups.rollup_state(args[0]) else None
        batches[-1]["replay"] = (args[1:], kwargs, state)
        batches[-1]["capture_s"] = time.perf_counter() - started
        started = time.perf_counter()
        result = update_rollups(*args, **kwargs)
        batches[-1]["rollups_s"] = round(time.perf_counter() - started, 3)
        return result

    def marked_rebuild(*args, **kwargs):
        batches[-1]["fill"] = True
        return rebuild(*args, **kwargs)

    load_run.load_batch, merge.update_rollups = timed_load, timed_rollups
    rollups.rebuild_rollups = marked_rebuild
    return batches


def rollup_share(batches):
    """The batches' figures with the rollups' share of each load in percent."""
    return [dict({key: value for key, value in batch.items() if key != "replay"},
                 rollups_pct=round(100 * batch["rollups_s"] / batch["load_s"], 1)) for batch in batches]


def incremental_share(batches):
    """The incremental batches' rollups (all but the first, the fill): {"n", "median_rollups_ms",
    "median_load_ms", "share_pct"} (share: summed rollups over summed loads), or None when there are none."""
    import statistics
    later = batches[1:]
    if not later:
        return None
    rollups, loads = [batch["rollups_s"] for batch in later], [batch["load_s"] for batch in later]
    return {"n": len(later), "median_rollups_ms": round(1000 * statistics.median(rollups), 1),
            "median_load_ms": round(1000 * statistics.median(loads), 1),
            "share_pct": round(100 * sum(rollups) / sum(loads), 1)}


def replay_rollups(url, batch, repeat=15, warm=False):
    """Milliseconds of ``update_rollups`` for a loaded ``batch`` (instrument_load's record) replayed
    ``repeat`` times with the rollups' state set back to before the batch, rolled back after:
    {"median_ms", "min_ms", "n"}. Each replay in a new connection (as a load's without a kept one) that
    has read the facts; ``warm``: all in one connection that has replayed it once before (as a load's
    kept connection, utils.db.kept). One batch's single timing swings several-fold on a busy host; the
    median of the same work does not."""
    import statistics

    from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
    from utils.load.rollups import update_rollups
    args, kwargs, state = batch["replay"]
    spent = []

    def replay(conn):
        conn.run("START TRANSACTION ISOLATION LEVEL READ COMMITTED")
        conn.run("SELECT count(*) FROM (SELECT 1 FROM fact_sales_order LIMIT 1) s, "
                 "(SELECT 1 FROM fact_purchase_order LIMIT 1) p, (SELECT 1 FROM fact_payment LIMIT 1) y, "
                 "(SELECT 1 FROM dim_design LIMIT 1) d")
        for fact, mark, max_id in state:
            conn.run("UPDATE etl_rollup_state SET last_record_id = :mark, max_id = :max_id "
                     "WHERE fact_table = :fact", mark=mark, max_id=max_id, fact=fact)
        started = time.perf_counter()
        update_rollups(conn, *args, **kwargs)
        elapsed = (time.perf_counter() - started) * 1000
        conn.run("ROLLBACK")
        return elapsed

    kept = connect_to_db(credentials=credentials_from_url(url)) if warm else None
    try:
        if kept is not None:
            replay(kept)  # the warm-up: what a kept connection's previous invocation did
        for _ in range(repeat):
            conn = kept or connect_to_db(credentials=credentials_from_url(url))
            try:
                spent.append(replay(conn))
            finally:
                if kept is None:
                    close_db_connection(conn)
    finally:
        if kept is not None:
            close_db_connection(kept)
    return {"median_ms": round(statistics.median(spent), 1), "min_ms": round(min(spent), 1), "n": repeat}


def _load_child(source_url, warehouse_url, queue):
    """The first batch, then BENCH_INCREMENTAL_ROUNDS (default 1) incremental ones (30 simulated minutes
    each), every load through the real handler in this one process, as a warm Lambda container or the
    local emulator runs them (the load keeps its connection unless WAREHOUSE_KEEP_CONNECTION_SECONDS=0)."""
    from bench.transform_load_bench import _aws_child_setup
    _aws_child_setup(source_url, warehouse_url)
    import ingest
    import load
    import transform
    from totesys_local.generator import simulate
    batches = instrument_load()
    load.lambda_handler(transform.lambda_handler(ingest.lambda_handler({}, None), None), None)
    for round_number in range(int(os.environ.get("BENCH_INCREMENTAL_ROUNDS", "1"))):
        simulate(source_url, minutes=30, seed=7 + round_number)
        load.lambda_handler(transform.lambda_handler(ingest.lambda_handler({}, None), None), None)
    queue.put({"batches": rollup_share(batches), "replay": replay_rollups(warehouse_url, batches[-1]),
               "replay_warm": replay_rollups(warehouse_url, batches[-1], warm=True)})


def _best_ms(action, repeat=3):
    best = None
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        elapsed = (time.perf_counter() - started) * 1000
        best = elapsed if best is None else min(best, elapsed)
    return round(best, 1)


def _sections(queries):
    filters = queries.Filters()
    return {
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


def section_timings(url):
    """{section: best-of-3 milliseconds of its queries} in one read-only transaction."""
    from totesys_local.dashboard import queries
    with queries.read_only(url) as conn:
        return {name: _best_ms(lambda: section(conn)) for name, section in _sections(queries).items()}


def page_sql_ms(url):
    """Best of 3: every query of one page (status, data version and all sections) in one read-only
    transaction, as the page runs them, no cache."""
    from totesys_local.dashboard import queries
    sections = _sections(queries).values()

    def page():
        with queries.read_only(url) as conn:
            queries.status(conn)
            queries.data_version(conn)
            for section in sections:
                section(conn)
    return _best_ms(page)


def page_ms(url):
    """The whole page (all sections, charts and tables, as HTML) rendered by ``render_page`` in this
    process: the first render (figures computed), the best of 3 after it (the dashboard's cache), and
    the page's size in bytes."""
    from totesys_local.dashboard.app import render_page
    from totesys_local.dashboard.cache import PageCache
    cache, size = PageCache(), []

    def render():
        page = render_page(url, {}, cache)
        if page.status != 200:
            raise RuntimeError(f"bench: the page answered {page.status}")
        size.append(len(page.html.encode()))
    return {"first_ms": _best_ms(render, repeat=1), "cached_ms": _best_ms(render), "bytes": size[-1]}


def _serve(url, log_path):
    """Start ``totesys dashboard`` for ``url`` on a free port; return (process, base URL) once healthy."""
    from totesys_local.cluster import free_port
    port = free_port()
    log = open(log_path, "w")
    process = subprocess.Popen(  # nosec B603 - our own CLI, fixed arguments
        [sys.executable, "-m", "totesys_local.cli", "dashboard", "--warehouse", url, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:  # nosec B310
                if answer.read() == b"ok":
                    return process, base
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"bench: the dashboard did not start: {Path(log_path).read_text()[-2000:]}")


# The page's own Navigation Timing (milliseconds from the navigation's start): the server's first byte,
# the first contentful paint and the load event (the whole document parsed, laid out and painted).
NAVIGATION_TIMING = """() => { const n = performance.getEntriesByType('navigation')[0];
  const paint = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');
  return {ttfb_ms: Math.round(n.responseStart), fcp_ms: paint ? Math.round(paint.startTime) : null,
          load_ms: Math.round(n.loadEventEnd), bytes: n.transferSize}; }"""


def browser_page_ms(url, workdir):
    """Milliseconds in Debian's chromium against ``totesys dashboard`` (which warms the unfiltered page
    as it starts): the first visit right after the server answers its health check, the best of 3 new
    visits, and the currency filter applied through the form (one currency ticked, Apply clicked, the
    filtered page shown; its figures computed). ``first_ms``, ``cached_ms``, ``filter_ms``: wall time
    from opening a new tab (the filter: from the click) to the payments table shown, as Playwright sees
    it; ``navigation``: the page's own Navigation Timing of each (``NAVIGATION_TIMING``: server's first
    byte, first contentful paint, load event), which leaves out the tab's creation and Playwright's own
    round trips. None when chromium is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        print(f"bench: {CHROMIUM} missing (make chromium): page not measured in a browser", flush=True)
        return None
    from playwright.sync_api import sync_playwright
    process, base = _serve(url, Path(workdir) / "dashboard-bench.log")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=["--no-sandbox", "--headless=new"])

            timings = []

            def visit():
                page = browser.new_page(viewport={"width": 1400, "height": 2600})
                page.goto(base, wait_until="load", timeout=120_000)
                page.locator("#section-payments table").wait_for(timeout=120_000)
                timings.append(page.evaluate(NAVIGATION_TIMING))
                page.close()

            def filtered():
                page.get_by_role("checkbox").first.check()
                page.get_by_role("button", name="Apply").click()
                page.wait_for_url("**/?*currency=*", wait_until="load", timeout=120_000)
                page.locator("#section-payments table").wait_for(timeout=120_000)
                timings.append(page.evaluate(NAVIGATION_TIMING))
            figures = {"first_ms": _best_ms(visit, repeat=1), "cached_ms": _best_ms(visit)}
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            page.goto(base, wait_until="load", timeout=120_000)
            figures["filter_ms"] = _best_ms(filtered, repeat=1)
            page.close()
            cached = min(timings[1:4], key=lambda timing: timing["load_ms"])
            figures["navigation"] = {"first": timings[0], "cached": cached, "filter": timings[4]}
            browser.close()
            return figures
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(url, workdir):
    """The dashboard's figures on the warehouse at ``url`` (see the module docstring)."""
    sections = section_timings(url)
    return {"section_query_ms": sections, "slowest_section_ms": max(sections.values()),
            "page_sql_ms": page_sql_ms(url), "page_render_ms": page_ms(url),
            "page_chromium_ms": browser_page_ms(url, workdir)}


def fact_rows(url):
    from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        return {table: conn.run(f"SELECT count(*) FROM {table}")[0][0]  # nosec B608 - fixed names
                for table in ("fact_sales_order", "fact_purchase_order", "fact_payment")}
    finally:
        close_db_connection(conn)


def run(ctx):
    from totesys_local.cluster import create_database, with_database
    name = f"bench_dashboard_{uuid.uuid4().hex[:8]}"
    create_database(ctx["admin_url"], name)
    url = with_database(ctx["admin_url"], name)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_load_child, args=(ctx["source_url"], url, queue))
    child.start()
    loaded = queue.get()
    batches = loaded["batches"]
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"bench: loading the dashboard's warehouse failed (exit {child.exitcode})")
    results = {"fact_rows": fact_rows(url), "load_batches": batches,
               "incremental": incremental_share(batches), "incremental_rollups_replay": loaded["replay"],
               "incremental_rollups_replay_warm": loaded["replay_warm"]}
    if os.environ.get("BENCH_LOAD_ONLY") != "1":
        results.update(measure(url, ctx["workdir"]))
    else:
        results.update(slowest_section_ms=None, page_sql_ms=None, page_render_ms=None, page_chromium_ms=None)
    print(f"dashboard: slowest section {results['slowest_section_ms']} ms, "
          f"page SQL {results['page_sql_ms']} ms, "
          f"page render {results['page_render_ms']}, chromium {results['page_chromium_ms']}; "
          f"rollups per batch {[(b['rollups_s'], b['rollups_pct']) for b in batches]}, incremental batches "
          f"{results['incremental']}, the last one replayed in new connections {loaded['replay']}, in one "
          f"warm connection {loaded['replay_warm']} (load average {os.getloadavg()[0]:.1f})", flush=True)
    return results


def main():
    from bench.common import seeded_cluster
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with seeded_cluster() as ctx:
        print(run(ctx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
