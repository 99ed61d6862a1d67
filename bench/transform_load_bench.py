"""Transform and load benchmark: rows/s of the real transform and load, and the load beside its floor,
``psql \\copy <table> FROM file WITH CSV`` of the same rows into the same warehouse tables, in one run.

``run(ctx)`` takes ``{"source_url": seeded totesys, "admin_url": server admin URL (to create the
warehouse databases), "psql": path to psql, "workdir": Path}`` and returns the figures.
Each stage runs in its own child process (S3 and Secrets Manager are moto, in-process, inside it):
1. ingest (not timed) and a dump of the ingest bucket to ``workdir``;
2. transform of that batch: seconds and the child's peak RSS (getrusage), dump of the processed bucket;
3. load of the processed batch into a new warehouse database (schema created beforehand): seconds.
The floor loads the same processed rows, as CSV files, into a second new warehouse database created
from the same DDL, with one ``psql -1`` process (one transaction, dimensions before facts).
Standalone: ``venv/bin/python -m bench.transform_load_bench`` (throwaway cluster, scale BENCH_SCALE,
default 10). Not a test: nothing here asserts a time.
"""
import json
import multiprocessing
import os
import shutil
import subprocess  # nosec B404 - runs psql, a fixed program, for the floor
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

BUCKETS = {"INGEST_BUCKET": "bench-ingest", "PROCESSED_BUCKET": "bench-processed"}


def _aws_child_setup(source_url=None, warehouse_url=None):
    """Environment and moto for a child: fake credentials, buckets, secrets."""
    from moto import mock_aws

    from totesys_local.aws_emulation import (UNSET_VARIABLES, account_environment, create_buckets,
                                             put_credentials_secret)
    os.environ.update(account_environment(**BUCKETS, TOTESYS_SECRET_ID="bench/totesys",
                                          WAREHOUSE_SECRET_ID="bench/warehouse", LOG_LEVEL="WARNING"))
    for variable in UNSET_VARIABLES:
        os.environ.pop(variable, None)
    mock = mock_aws()
    mock.start()
    s3 = create_buckets(BUCKETS.values())
    for name, url in (("bench/totesys", source_url), ("bench/warehouse", warehouse_url)):
        if url:
            put_credentials_secret(name, url)
    return s3


def _dump(s3, bucket, folder):
    folder = Path(folder)
    from utils.aws.objects import list_keys
    for key in list_keys(s3, bucket):
        target = folder / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _restore(s3, bucket, folder):
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.put_object(Bucket=bucket, Key=path.relative_to(folder).as_posix(), Body=path.read_bytes())


def _ingest_child(source_url, folder, queue):
    s3 = _aws_child_setup(source_url=source_url)
    from utils.ingest.modes import run_ingest
    run_ingest({})
    _dump(s3, BUCKETS["INGEST_BUCKET"], folder)
    queue.put({})


def _transform_child(ingest_folder, processed_folder, queue):
    import resource
    s3 = _aws_child_setup()
    _restore(s3, BUCKETS["INGEST_BUCKET"], ingest_folder)
    from utils.transform.run import run_transform
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    result = run_transform({})
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from utils.aws.manifests import read_ingest_manifest
    from utils.aws.state import read_ingest_state
    state, _ = read_ingest_state(s3, BUCKETS["INGEST_BUCKET"])
    landed = read_ingest_manifest(s3, BUCKETS["INGEST_BUCKET"], state["manifest_key"])
    source_rows = sum(entry["rows"] for entry in landed["tables"].values())
    _dump(s3, BUCKETS["PROCESSED_BUCKET"], processed_folder)
    queue.put({"seconds": seconds, "peak_mb": peak_mb, "baseline_mb": baseline_mb,
               "source_rows": source_rows, "tables": result["tables"]})


def _load_child(warehouse_url, processed_folder, csv_folder, queue):
    s3 = _aws_child_setup(warehouse_url=warehouse_url)
    _restore(s3, BUCKETS["PROCESSED_BUCKET"], processed_folder)
    from utils.load.run import run_load
    started = time.perf_counter()
    result = run_load({})
    seconds = time.perf_counter() - started
    # The floor's input: the same rows as CSV files, written the way the loader streams them.
    from utils.aws.objects import read_parquet_table
    from utils.load.merge import csv_stream
    from utils.aws.manifests import read_processed_manifest
    from utils.aws.state import read_transform_state
    from utils.catalog.warehouse import WAREHOUSE_SCHEMAS
    state, _ = read_transform_state(s3, BUCKETS["PROCESSED_BUCKET"])
    manifest = read_processed_manifest(s3, BUCKETS["PROCESSED_BUCKET"], state["manifest_key"])
    for name, entry in manifest["tables"].items():
        table = read_parquet_table(s3, BUCKETS["PROCESSED_BUCKET"], entry["key"], name,
                                   WAREHOUSE_SCHEMAS[name])
        (Path(csv_folder) / f"{name}.csv").write_bytes(csv_stream(table).getvalue())
    queue.put({"seconds": seconds, "tables": result["tables"]})


def _in_child(target, *args):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=target, args=args + (queue,))
    child.start()
    figures = queue.get(timeout=3600)
    child.join()
    if child.exitcode:
        raise RuntimeError(f"{target.__name__} failed with exit code {child.exitcode}")
    return figures


def _psql_args(psql, url):
    parts = urlsplit(url)
    env = dict(os.environ, PGPASSWORD=unquote(parts.password or ""))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = unquote(parts.username or "postgres")
    return [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", urlunsplit((parts.scheme, f"{user}@{netloc}",
                                                                   parts.path, "", ""))], env


def create_schema(warehouse_url):
    """Create the warehouse tables (both databases get them before anything is timed)."""
    from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
    from utils.load.schema import schema_statements
    conn = connect_to_db(credentials=credentials_from_url(warehouse_url))
    try:
        for statement in schema_statements():
            conn.run(statement)
    finally:
        close_db_connection(conn)


def measure_floor(psql, warehouse_url, csv_folder, tables):
    """Time one psql process copying every CSV file into its table, in one transaction."""
    from utils.catalog.warehouse import WAREHOUSE_SCHEMAS, WAREHOUSE_TABLES
    args, env = _psql_args(psql, warehouse_url)
    args.append("-1")
    for name in WAREHOUSE_TABLES:
        if name in tables:
            columns = ", ".join(field.name for field in WAREHOUSE_SCHEMAS[name])
            args += ["-c", f"\\copy {name} ({columns}) FROM '{Path(csv_folder) / (name + '.csv')}' WITH CSV"]
    started = time.perf_counter()
    subprocess.run(args, env=env, capture_output=True, text=True, check=True)  # nosec B603
    return time.perf_counter() - started


def run(ctx):
    """Return transform and load figures for the seeded database ``ctx["source_url"]``."""
    from totesys_local.cluster import create_database, drop_database, with_database
    workdir = Path(ctx["workdir"]) / f"transform_load_{uuid.uuid4().hex[:8]}"
    folders = {name: workdir / name for name in ("ingest", "processed", "csv")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    databases = [f"bench_wh_{uuid.uuid4().hex[:8]}", f"bench_floor_{uuid.uuid4().hex[:8]}"]
    try:
        _in_child(_ingest_child, ctx["source_url"], str(folders["ingest"]))
        transform = _in_child(_transform_child, str(folders["ingest"]), str(folders["processed"]))
        for name in databases:
            create_database(ctx["admin_url"], name)
        warehouse_url, floor_url = (with_database(ctx["admin_url"], name) for name in databases)
        create_schema(warehouse_url)
        create_schema(floor_url)
        load = _in_child(_load_child, warehouse_url, str(folders["processed"]), str(folders["csv"]))
        floor_seconds = measure_floor(ctx["psql"], floor_url, folders["csv"], transform["tables"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for name in databases:
            try:
                drop_database(ctx["admin_url"], name)
            except Exception:  # nosec B110 - a database that was never created
                pass
    warehouse_rows = sum(transform["tables"].values())
    return {
        "source_rows": transform["source_rows"],
        "warehouse_rows": warehouse_rows,
        "warehouse_rows_per_table": transform["tables"],
        "transform_seconds": round(transform["seconds"], 3),
        "transform_source_rows_per_s": round(transform["source_rows"] / transform["seconds"]),
        "transform_peak_mb": round(transform["peak_mb"], 1),
        "transform_baseline_mb": round(transform["baseline_mb"], 1),
        "load_seconds": round(load["seconds"], 3),
        "load_rows_per_s": round(warehouse_rows / load["seconds"]),
        "floor_seconds": round(floor_seconds, 3),
        "floor_rows_per_s": round(warehouse_rows / floor_seconds),
        "load_to_floor_ratio": round(load["seconds"] / floor_seconds, 2),
    }


def main():
    from bench.common import seeded_cluster
    with seeded_cluster() as ctx:
        figures = run(ctx)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
