"""The whole pipeline beside PostgreSQL's own COPY (issue 11): ``totesys run`` wall and execution time.

``run(ctx)`` (ctx from ``bench.common.seeded_cluster``) measures, on the same server:
- the floor: ``psql \\copy`` OUT of the 11 source tables to CSV files, then ``psql -1 \\copy`` IN of those
  files into FK-less copies of the tables (keys kept) in a new database;
- ``venv/bin/totesys run`` (a child process, as a user runs it) into a new warehouse WITH the pipeline's
  own DDL (foreign keys) and into one whose fact foreign keys are dropped: wall time of the command and
  the execution time it reports, through the state folder's local emulator (``totesys_local.daemon``),
  started first and timed apart (``emulator_start``: what the first run of a folder pays once);
- with ``incremental=True``: ``simulate`` then ``totesys run`` again (the changes only), then once more
  with nothing new.
Standalone: ``BENCH_SCALE=20 venv/bin/python -m bench.pipeline_bench``. Not a test: nothing asserts a time.
"""
import os
import re
import subprocess  # nosec B404 - runs psql and the project's own CLI, fixed programs
import sys
import tempfile
import time
from pathlib import Path

from totesys_local.cluster import create_database, with_database
from totesys_local.daemon import client as emulator
from totesys_local.generator import SCHEMA_PATH, simulate
from utils.catalog.source import SOURCE_TABLES
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url

TOTESYS = str(Path(sys.executable).with_name("totesys"))
EXECUTION = re.compile(r"\(execution ([0-9.]+) s\)")
STAGES = re.compile(r"seconds per stage: (.*) \(execution")


def _psql(ctx, url, script):
    started = time.perf_counter()
    subprocess.run([ctx["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-d", url, "-f", script],  # nosec
                   check=True, capture_output=True)
    return time.perf_counter() - started


def _sql(url, *statements):
    conn = connect_to_db(credentials_from_url(url))
    try:
        result = None
        for statement in statements:
            result = conn.run(statement)
        return result
    finally:
        close_db_connection(conn)


def _drop_foreign_keys(url, tables):
    rows = _sql(url, "SELECT c.relname, con.conname FROM pg_constraint con JOIN pg_class c "
                     "ON c.oid = con.conrelid WHERE con.contype = 'f'")
    statements = [f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"'
                  for table, name in rows if tables is None or table in tables]
    if statements:
        _sql(url, *statements)


def floor(ctx, name):
    """Seconds of psql \\copy out + in of the 11 source tables (into FK-less copies), and rows copied."""
    folder = Path(tempfile.mkdtemp(prefix="floor-", dir=ctx["workdir"]))
    out_script, in_script = folder / "out.sql", folder / "in.sql"
    out_script.write_text("".join(f"\\copy (SELECT * FROM {t}) TO '{folder / t}.csv' WITH CSV\n"
                                  for t in SOURCE_TABLES))
    in_script.write_text("".join(f"\\copy {t} FROM '{folder / t}.csv' WITH CSV\n" for t in SOURCE_TABLES))
    create_database(ctx["admin_url"], name)
    target = with_database(ctx["admin_url"], name)
    _sql(target, *[s for s in SCHEMA_PATH.read_text().split(";\n") if s.strip()])
    _drop_foreign_keys(target, None)
    seconds = _psql(ctx, ctx["source_url"], str(out_script)) + _psql(ctx, target, str(in_script))
    rows = sum(_sql(target, f"SELECT count(*) FROM {t}")[0][0] for t in SOURCE_TABLES)  # nosec B608
    return {"seconds": round(seconds, 3), "rows": rows}


def totesys_run(ctx, warehouse_url, state_dir):
    """``totesys run`` as a child process: wall seconds, the execution seconds it printed, its output."""
    env = dict(os.environ, POWERTOOLS_METRICS_DISABLED="true")
    started = time.perf_counter()
    done = subprocess.run([TOTESYS, "run", "--source", ctx["source_url"], "--warehouse",  # nosec B603
                           warehouse_url, "--state-dir", str(state_dir)], capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"totesys run failed:\n{done.stdout}\n{done.stderr}")
    found = EXECUTION.search(done.stdout)
    execution = float(found.group(1)) if found else None
    stages = STAGES.search(done.stdout)
    per_stage = dict((name, float(seconds)) for name, seconds in
                     (part.split() for part in stages.group(1).split(", "))) if stages else {}
    return {"wall": round(wall, 2), "execution": execution, "stages": per_stage,
            "startup": round(wall - execution, 2) if execution is not None else None,
            "nothing_new": "nothing new" in done.stdout, "emulator_idle_rss_mb": emulator_rss_mb(state_dir)}


def emulator_rss_mb(state_dir):
    """Resident memory (MB, VmRSS) of the state folder's local emulator, idle after the run (issue 24: at
    most 300 MB; each run is served by a forked child that gives its memory back); None without one."""
    pid = emulator.running_pid(state_dir)
    try:
        status = Path(f"/proc/{pid}/status").read_text() if pid else ""
    except OSError:
        return None
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return round(int(found.group(1)) / 1000) if found else None


def run(ctx, incremental=True, label=""):
    """The figures of one scale (see the module docstring)."""
    results = {"floor": floor(ctx, f"floor{label}")}
    print(f"floor {results['floor']}", flush=True)
    warehouses = {}
    for kind in ("fk", "no_fk"):
        name = f"wh_{kind}{label}"
        create_database(ctx["admin_url"], name)
        warehouses[kind] = with_database(ctx["admin_url"], name)
    # The FK-less warehouse: the pipeline's own schema with the facts' foreign keys dropped.
    from utils.load.schema import ensure_warehouse_schema
    conn = connect_to_db(credentials_from_url(warehouses["no_fk"]))
    try:
        ensure_warehouse_schema(conn)
    finally:
        close_db_connection(conn)
    _drop_foreign_keys(warehouses["no_fk"], {"fact_sales_order", "fact_purchase_order", "fact_payment"})
    states = {kind: Path(tempfile.mkdtemp(prefix=f"state-{kind}-", dir=ctx["workdir"]))
              for kind in warehouses}
    try:
        _runs(ctx, results, warehouses, states, incremental)
    finally:
        for state in states.values():
            emulator.stop(state)
    return results


def _start_emulator(state_dir):
    """Start the local emulator of ``state_dir`` as a first `totesys run` does; return its seconds."""
    started = time.perf_counter()
    emulator.start(state_dir)
    return round(time.perf_counter() - started, 2)


def _vacuum(*urls):
    """VACUUM ANALYZE each database (untimed): what autovacuum does within a minute of a bulk write."""
    for url in urls:
        _sql(url, "VACUUM ANALYZE")


def _runs(ctx, results, warehouses, states, incremental):
    for kind in ("no_fk", "fk"):
        # The seeded source, and the warehouse the previous backfill wrote, as autovacuum keeps them:
        # otherwise its workers compete with the measured run for the 2 cores.
        _vacuum(ctx["source_url"], *warehouses.values())
        # Warm: the emulator of the state folder is started first (what the first `totesys run` of a
        # folder pays once, reported apart as emulator_start); "cold" = emulator_start + wall.
        emulator_start = _start_emulator(states[kind])
        results[f"run_{kind}"] = totesys_run(ctx, warehouses[kind], states[kind])
        results[f"run_{kind}"]["emulator_start"] = emulator_start
        results[f"run_{kind}"]["cold_wall"] = round(emulator_start + results[f"run_{kind}"]["wall"], 2)
        ratio = results[f"run_{kind}"]["execution"] / results["floor"]["seconds"]
        results[f"run_{kind}"]["execution_over_floor"] = round(ratio, 2)
        results[f"run_{kind}"]["wall_over_floor"] = round(results[f"run_{kind}"]["wall"]
                                                          / results["floor"]["seconds"], 2)
        print(f"totesys run into {kind}: {results[f'run_{kind}']}", flush=True)
    if incremental:
        before = _sql(ctx["source_url"], "SELECT count(*) FROM sales_order")[0][0]
        simulate(ctx["source_url"], minutes=30, seed=11)
        results["incremental_new_sales_orders"] = \
            _sql(ctx["source_url"], "SELECT count(*) FROM sales_order")[0][0] - before
        # Steady state, as a run 15 minutes after the last one meets it: autovacuum has long since
        # vacuumed and analysed what the backfills wrote (here it would still be at work, on 2 cores).
        _vacuum(ctx["source_url"], warehouses["fk"], warehouses["no_fk"])
        results["incremental"] = totesys_run(ctx, warehouses["fk"], states["fk"])
        print(f"incremental: {results['incremental']}", flush=True)
        results["nothing_new"] = totesys_run(ctx, warehouses["fk"], states["fk"])
        print(f"nothing new: {results['nothing_new']}", flush=True)


def main():
    import json

    from bench.common import SCALE, seeded_cluster
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with seeded_cluster(SCALE) as ctx:
        print(json.dumps(run(ctx, incremental=SCALE == 10), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
