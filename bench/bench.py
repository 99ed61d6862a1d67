"""`make bench`: ingest, transform and load at scale 10, each beside PostgreSQL's own bulk-copy floor, then
the whole pipeline (`totesys run`) at scale 10 and 20 beside the psql \\copy floor (bench/pipeline_bench.py).

Seeds a throwaway cluster once, then runs each stage's benchmark module. Figures are printed and
written to bench/results/latest.json (git-ignored); docs/BENCHMARKS.md records the reported ones.
Not a test: nothing here asserts a time.
"""
import json
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from totesys_local.cluster import create_database, temporary_cluster, with_database
from totesys_local.generator import seed

SCALE = float(os.environ.get("BENCH_SCALE", "10"))


def find_psql(bindir):
    for candidate in (os.path.join(bindir, "psql"), shutil.which("psql")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("bench: psql not found (needed for the \\copy floor)")


@contextmanager
def seeded_cluster(scale=SCALE):
    """A throwaway cluster with totesys seeded at ``scale``; yields the benchmark context
    {"source_url", "admin_url", "psql", "workdir", "seed_seconds", "rows_seeded"}."""
    workdir = Path("bench/results").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = temporary_cluster()
    try:
        admin_url = cluster.url()
        create_database(admin_url, "bench_totesys")
        source_url = with_database(admin_url, "bench_totesys")
        started = time.perf_counter()
        counts = seed(source_url, scale=scale, seed=42)
        seed_seconds = time.perf_counter() - started
        print(f"seeded scale {scale:g}: {sum(counts.values()):,} rows in {seed_seconds:.1f} s", flush=True)
        yield {"source_url": source_url, "admin_url": admin_url, "psql": find_psql(cluster.info.bindir),
               "workdir": workdir, "seed_seconds": round(seed_seconds, 2), "rows_seeded": counts}
    finally:
        cluster.destroy()


def main():
    from bench import (cdc_bench, dashboard_bench, deletes_bench, ingest_bench, pipeline_bench,
                       transform_load_bench)
    # The stages' EMF metric lines (utils.metrics) would bury the figures; children inherit this.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with seeded_cluster() as ctx:
        results = {"scale": SCALE, "seed_seconds": ctx["seed_seconds"], "rows_seeded": ctx["rows_seeded"],
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                              f"Python {platform.python_version()}",
                   "ingest": ingest_bench.run(ctx), "transform_load": transform_load_bench.run(ctx),
                   "dashboard": dashboard_bench.run(ctx), "deletes": deletes_bench.run(ctx),
                   "cdc": cdc_bench.run(ctx),
                   "pipeline": {"scale 10": pipeline_bench.run(ctx, incremental=True)}}
    with seeded_cluster(20) as ctx20:
        results["pipeline"]["scale 20"] = pipeline_bench.run(ctx20, incremental=False, label="20")
    (ctx["workdir"] / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
