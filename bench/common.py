"""What the benchmarks share: the scale (BENCH_SCALE) and a throwaway cluster with totesys seeded.

Each benchmark module imports this, never ``bench.bench`` (which imports every benchmark to run them all).
"""
import os
import shutil
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
