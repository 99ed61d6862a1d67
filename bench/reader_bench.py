"""Readers during a load (issue 19): how long a stream of readers waits while a first load runs.

`BENCH_SCALE=10 venv/bin/python -m bench.reader_bench` (default scale 10, one bounded batch).

Seeds a throwaway cluster, ingests and transforms once (in process, one moto S3 server), then loads the
batch into a warehouse with the project's DDL (foreign keys) twice, each time into a new database:
- ``stream``: three reader sessions loop ``SELECT count(*)`` over dim_staff, dim_transaction,
  fact_sales_order and fact_payment while the load runs;
- ``idle reader``: the same stream, plus an analyst who read dim_staff and stays idle in his transaction
  for up to ``IDLE_SECONDS`` (then rolls back, so a load that waits on him finishes).
Prints, per scenario: the load's seconds, whether the load finished while the analyst was still idle, the
seconds the load's sessions spent waiting on a lock (``pg_stat_activity`` sampled every 0.1 s), and the
readers' statement latencies (count, median, p99, max, in ms). Not a test: nothing asserts a time.
"""
import json
import os
import statistics
import sys
import threading
import time

from bench.scale_bench import _free_port

SCALE = float(os.environ.get("BENCH_SCALE", "10"))
IDLE_SECONDS = float(os.environ.get("IDLE_SECONDS", "30"))
READ_TABLES = ("dim_staff", "dim_transaction", "fact_sales_order", "fact_payment")
SAMPLE_SECONDS = 0.1


def _connect(url):
    from utils.db.connection import connect_to_db, credentials_from_url
    return connect_to_db(credentials_from_url(url))


def _reader(url, stop, latencies):
    conn = _connect(url)
    try:
        while not stop.is_set():
            for table in READ_TABLES:
                started = time.perf_counter()
                conn.run(f"SELECT count(*) FROM {table}")  # nosec B608 - fixed table names
                latencies.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()


def _lock_waits(url, stop, samples):
    """Every SAMPLE_SECONDS: 1 if a session other than the readers waits on a lock, else 0."""
    conn = _connect(url)
    try:
        while not stop.is_set():
            rows = conn.run("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND query NOT LIKE 'SELECT count(*) FROM %'")
            samples.append(1 if rows[0][0] else 0)
            time.sleep(SAMPLE_SECONDS)
    finally:
        conn.close()


def _figures(latencies):
    ordered = sorted(latencies)
    return {"reads": len(ordered), "median_ms": round(statistics.median(ordered), 1),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 1), "max_ms": round(ordered[-1], 1)}


def scenario(admin_url, name, idle):
    """Load the pending batch into a new warehouse ``name`` under readers; return the figures."""
    import load
    from totesys_local.cluster import create_database, with_database
    from totesys_local.aws_emulation import put_credentials_secret
    from utils.load.schema import ensure_warehouse_schema

    create_database(admin_url, name)
    url = with_database(admin_url, name)
    conn = _connect(url)
    ensure_warehouse_schema(conn)
    conn.close()
    put_credentials_secret(f"readers/{name}", url)
    os.environ["WAREHOUSE_SECRET_ID"] = f"readers/{name}"
    analyst = None
    if idle:
        analyst = _connect(url)
        analyst.run("START TRANSACTION")
        analyst.run("SELECT count(*) FROM dim_staff")
    stop, latencies = threading.Event(), []
    samples: list = []
    readers = [threading.Thread(target=_reader, args=(url, stop, latencies)) for _ in range(3)]
    readers.append(threading.Thread(target=_lock_waits, args=(url, stop, samples)))
    for thread in readers:
        thread.start()
    time.sleep(0.5)
    done = threading.Event()
    outcome = {}

    def run_load():
        started = time.perf_counter()
        outcome["result"] = load.lambda_handler({}, None)
        outcome["seconds"] = round(time.perf_counter() - started, 2)
        done.set()
    loader = threading.Thread(target=run_load)
    loader.start()
    finished_while_idle = None
    if analyst is not None:
        finished_while_idle = done.wait(IDLE_SECONDS)
        analyst.run("ROLLBACK")
        analyst.close()
    loader.join()
    stop.set()
    for thread in readers:
        thread.join()
    return {"load_seconds": outcome["seconds"], "finished_while_analyst_idle": finished_while_idle,
            "rows": sum(outcome["result"]["tables"].values()), "readers": _figures(latencies),
            "load_lock_wait_seconds": round(sum(samples) * SAMPLE_SECONDS, 1),
            "load_average": round(os.getloadavg()[0], 2)}


def main():
    import boto3
    from moto.server import ThreadedMotoServer

    from bench.common import seeded_cluster
    from totesys_local.aws_emulation import put_credentials_secret

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "eu-west-2", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "INGEST_BUCKET": "readers-ingest", "PROCESSED_BUCKET": "readers-processed",
                       "TOTESYS_SECRET_ID": "readers/totesys", "POWERTOOLS_METRICS_DISABLED": "true"})
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import ingest  # after LOG_LEVEL is set
    import transform
    try:
        with seeded_cluster(SCALE) as ctx:
            s3 = boto3.client("s3")
            for bucket in ("readers-ingest", "readers-processed"):
                s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
            put_credentials_secret("readers/totesys", ctx["source_url"])
            ingest.lambda_handler({}, None)
            transform.lambda_handler({}, None)
            results = {"scale": SCALE,
                       "stream": scenario(ctx["admin_url"], "readers_stream", idle=False),
                       "idle reader": scenario(ctx["admin_url"], "readers_idle", idle=True)}
    finally:
        server.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
