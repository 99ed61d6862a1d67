"""`make bench-scale`: a backfill of totesys at x100 (BENCH_SCALE, default 100) in bounded batches (issue 11).

Seeds a throwaway cluster, then loops ingest -> transform -> load as the state machine does, until the
transform no longer reports ``more_waiting``; each stage invocation runs in a child process of its own (as
each Lambda invocation is its own), against one moto S3 server, so its peak memory (``ru_maxrss``) and
duration are its own. Prints per-invocation and per-stage figures (max peak memory, max and total
seconds) and the batch count, at ``MAX_BATCH_ROWS`` (default: the setting's default). Then (issue 25) one
incremental round after 30 simulated minutes of business, and the dashboard on the caught-up warehouse
(``bench.dashboard_bench.measure``); each load reports the rollups' share of it. Not a test.
"""
import json
import multiprocessing
import os
import socket
import sys
import time

from utils.config import DEFAULT_MAX_BATCH_ROWS

SCALE = float(os.environ.get("BENCH_SCALE", "100"))
MAX_ROUNDS = 200


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _peak_mb():
    """This process's peak resident memory (VmHWM: reset at exec, unlike ru_maxrss, which a spawned child
    would inherit from its parent's fork)."""
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    raise SystemExit("bench: no VmHWM in /proc/self/status")


def _stage_child(stage, queue):
    from ingest import lambda_handler as ingest_handler
    from load import lambda_handler as load_handler
    from transform import lambda_handler as transform_handler
    handler = {"ingest": ingest_handler, "transform": transform_handler, "load": load_handler}[stage]
    if stage == "load":
        from bench.dashboard_bench import instrument_load, rollup_share
        batches = instrument_load()
    baseline = _peak_mb()
    started = time.perf_counter()
    result = handler({}, None)
    seconds = time.perf_counter() - started
    rows = sum((result.get("tables") or {}).values()) if stage != "ingest" else len(result)
    queue.put({"seconds": round(seconds, 2), "peak_mb": _peak_mb(), "baseline_mb": baseline, "rows": rows,
               "more_waiting": bool(result.get("more_waiting")) if stage == "transform" else None,
               "batches": rollup_share(batches) if stage == "load" else None})


def invoke(stage):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_stage_child, args=(stage, queue))
    child.start()
    figures = queue.get()
    child.join()
    if child.exitcode:
        raise SystemExit(f"{stage} failed (exit {child.exitcode})")
    return figures


def main():
    import boto3
    from moto.server import ThreadedMotoServer

    from bench.bench import seeded_cluster
    from totesys_local.cluster import create_database, with_database
    from utils.db.connection import credentials_from_url

    max_rows = int(os.environ.get("MAX_BATCH_ROWS", DEFAULT_MAX_BATCH_ROWS))
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "eu-west-2", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "INGEST_BUCKET": "scale-ingest", "PROCESSED_BUCKET": "scale-processed",
                       "TOTESYS_SECRET_ID": "scale/totesys", "WAREHOUSE_SECRET_ID": "scale/warehouse",
                       "MAX_BATCH_ROWS": str(max_rows), "LOG_LEVEL": "WARNING",
                       "POWERTOOLS_METRICS_DISABLED": "true"})
    try:
        with seeded_cluster(SCALE) as ctx:
            create_database(ctx["admin_url"], "scale_warehouse")
            warehouse_url = with_database(ctx["admin_url"], "scale_warehouse")
            s3 = boto3.client("s3")
            for bucket in ("scale-ingest", "scale-processed"):
                s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
            secrets = boto3.client("secretsmanager")
            for name, url in (("scale/totesys", ctx["source_url"]), ("scale/warehouse", warehouse_url)):
                secrets.create_secret(Name=name, SecretString=json.dumps(credentials_from_url(url)))
            rounds, started = [], time.perf_counter()
            while len(rounds) < MAX_ROUNDS:
                figures = {stage: invoke(stage) for stage in ("ingest", "transform", "load")}
                rounds.append(figures)
                print(f"batch {len(rounds)}: " + ", ".join(
                    f"{stage} {f['seconds']} s {f['peak_mb']} MB" for stage, f in figures.items()),
                      flush=True)
                if not figures["transform"]["more_waiting"]:
                    break
            total = time.perf_counter() - started
            from bench import dashboard_bench
            from totesys_local.generator import simulate
            simulate(ctx["source_url"], minutes=30, seed=7)
            incremental = {stage: invoke(stage) for stage in ("ingest", "transform", "load")}
            print(f"incremental: {incremental['load']['batches']}", flush=True)
            dashboard = dashboard_bench.measure(warehouse_url, ctx["workdir"])
            summary = {"scale": SCALE, "rows_seeded": sum(ctx["rows_seeded"].values()),
                       "max_batch_rows": max_rows, "batches": len(rounds),
                       "total_seconds": round(total, 1),
                       "stages": {stage: {"max_peak_mb": max(r[stage]["peak_mb"] for r in rounds),
                                          "max_seconds": max(r[stage]["seconds"] for r in rounds),
                                          "total_seconds": round(sum(r[stage]["seconds"]
                                                                     for r in rounds), 1)}
                                  for stage in ("ingest", "transform", "load")},
                       "warehouse_fact_rows": sum(r["load"]["rows"] for r in rounds),
                       "rollups_per_batch": [batch for r in rounds for batch in r["load"]["batches"]],
                       "incremental_load": incremental["load"]["batches"], "dashboard": dashboard}
            from bench import verify_bench
            summary["verify"] = verify_bench.run(ctx["source_url"], warehouse_url, "scale-ingest")
            (ctx["workdir"] / "scale.json").write_text(json.dumps({"summary": summary, "rounds": rounds},
                                                                  indent=2))
            print(json.dumps(summary, indent=2))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
