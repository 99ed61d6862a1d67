"""Ingest benchmark: rows/s of the real ingest (COPY -> Arrow -> Parquet -> S3) beside the floor,
PostgreSQL's own ``psql \\copy (SELECT * FROM t) TO file WITH CSV`` of the same tables, in one run.

``run(ctx)`` takes ``{"source_url": seeded totesys, "psql": path to psql, "workdir": Path}`` and returns
the figures. The ingest runs in a child process (its own peak RSS from getrusage; S3 and Secrets Manager
are moto, in-process, inside that child). Standalone: ``venv/bin/python -m bench.ingest_bench``
(throwaway cluster, scale BENCH_SCALE, default 10; BENCH_REPEAT runs, default 1, each with its own floor,
then the best and the median ratio). Not a test: nothing here asserts a time, but a run whose floor and
ingest did not move the same tables and rows raises instead of reporting a ratio.
"""
import json
import multiprocessing
import os
import re
import statistics
import subprocess  # nosec B404 - runs psql, a fixed program, for the floor
import sys
import time
from urllib.parse import unquote, urlsplit, urlunsplit

from utils.catalog.source import SOURCE_TABLES


def _ingest_child(source_url, queue):
    """Run one full ingest into moto S3; report rows, seconds and this process's peak RSS."""
    import resource

    from moto import mock_aws

    from totesys_local.aws_emulation import (UNSET_VARIABLES, account_environment, create_buckets,
                                             put_credentials_secret)
    os.environ.update(account_environment(INGEST_BUCKET="bench-ingest", PROCESSED_BUCKET="bench-processed",
                                          TOTESYS_SECRET_ID="bench/totesys", LOG_LEVEL="WARNING"))
    for variable in UNSET_VARIABLES:
        os.environ.pop(variable, None)
    from utils.ingest.modes import run_ingest
    from utils.aws.manifests import read_ingest_manifest
    from utils.aws.state import read_ingest_state

    with mock_aws():
        s3 = create_buckets(["bench-ingest"])
        put_credentials_secret("bench/totesys", source_url)
        baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        result = run_ingest({})
        seconds = time.perf_counter() - started
        state, _ = read_ingest_state(s3, "bench-ingest")
        manifest = read_ingest_manifest(s3, "bench-ingest", state["manifest_key"])
        rows = {name: entry["rows"] for name, entry in manifest["tables"].items()}
        parquet_bytes = sum(s3.head_object(Bucket="bench-ingest", Key=key)["ContentLength"]
                            for key in result.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"rows": rows, "seconds": seconds, "peak_mb": peak_mb, "baseline_mb": baseline_mb,
               "parquet_bytes": parquet_bytes})


def measure_ingest(source_url):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_ingest_child, args=(source_url, queue))
    child.start()
    figures = queue.get(timeout=1800)
    child.join()
    return figures


def _floor_rows(stdout):
    return [int(n) for n in re.findall(r"^COPY (\d+)$", stdout, flags=re.MULTILINE)]


def measure_floor(source_url, psql, workdir):
    """Time one psql process doing ``\\copy (SELECT * FROM t) TO file WITH CSV`` for every table."""
    parts = urlsplit(source_url)
    env = dict(os.environ, PGPASSWORD=unquote(parts.password or ""))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = unquote(parts.username or "postgres")
    url = urlunsplit((parts.scheme, f"{user}@{netloc}", parts.path, "", ""))
    args = [psql, "-X", "-v", "ON_ERROR_STOP=1", url]
    for table in SOURCE_TABLES:
        target = workdir / f"floor_{table}.csv"
        args += ["-c", f"\\copy (SELECT * FROM \"{table}\") TO '{target}' WITH CSV"]
    started = time.perf_counter()
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=True)  # nosec B603
    seconds = time.perf_counter() - started
    per_table = _floor_rows(result.stdout)
    if len(per_table) != len(SOURCE_TABLES):
        raise RuntimeError(f"psql reported {len(per_table)} COPY results for {len(SOURCE_TABLES)} tables")
    rows = dict(zip(SOURCE_TABLES, per_table))
    csv_bytes = sum((workdir / f"floor_{table}.csv").stat().st_size for table in SOURCE_TABLES)
    for table in SOURCE_TABLES:
        (workdir / f"floor_{table}.csv").unlink()
    return {"rows": rows, "seconds": seconds, "csv_bytes": csv_bytes}


def _check_same_work(ingest_rows, floor):
    """The ratio only means something when both sides moved the same tables and rows."""
    for label, run in floor.items():
        # A table without rows lands no file, so it is absent from the ingest's manifest.
        if {table: n for table, n in run["rows"].items() if n} != ingest_rows:
            raise RuntimeError(f"floor ({label}) and ingest moved different rows: floor {run['rows']}, "
                               f"ingest {ingest_rows}")


def run(ctx):
    """Return the ingest and floor figures for the seeded database ``ctx["source_url"]``."""
    workdir = ctx["workdir"]
    workdir.mkdir(parents=True, exist_ok=True)
    floor_before = measure_floor(ctx["source_url"], ctx["psql"], workdir)
    ingest = measure_ingest(ctx["source_url"])
    floor_after = measure_floor(ctx["source_url"], ctx["psql"], workdir)
    _check_same_work(ingest["rows"], {"before": floor_before, "after": floor_after})
    rows = sum(ingest["rows"].values())
    floor_seconds = min(floor_before["seconds"], floor_after["seconds"])
    return {
        "rows": rows,
        "rows_per_table": ingest["rows"],
        "floor_rows": sum(floor_before["rows"].values()),
        "ingest_seconds": round(ingest["seconds"], 3),
        "ingest_rows_per_s": round(rows / ingest["seconds"]),
        "floor_seconds": round(floor_seconds, 3),
        "floor_seconds_each_run": [round(floor_before["seconds"], 3), round(floor_after["seconds"], 3)],
        "floor_rows_per_s": round(rows / floor_seconds),
        "ratio": round(ingest["seconds"] / floor_seconds, 2),
        "peak_mb": round(ingest["peak_mb"], 1),
        "baseline_mb_before_ingest": round(ingest["baseline_mb"], 1),
        "parquet_bytes": ingest["parquet_bytes"],
        "floor_csv_bytes": floor_before["csv_bytes"],
    }


def main():
    from bench.common import seeded_cluster
    runs = []
    with seeded_cluster() as ctx:
        for _ in range(int(os.environ.get("BENCH_REPEAT", "1"))):
            runs.append(run(ctx))
            print(json.dumps(runs[-1], indent=2), flush=True)
    ratios = [figures["ratio"] for figures in runs]
    print(json.dumps({"runs": len(runs), "ratios": ratios, "best_ratio": min(ratios),
                      "median_ratio": statistics.median(ratios),
                      "max_peak_mb": max(figures["peak_mb"] for figures in runs)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
