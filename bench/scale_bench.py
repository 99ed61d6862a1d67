"""`make bench-scale`: a backfill of totesys in bounded batches at each scale of BENCH_SCALE (a comma-
separated list, default "100"; e.g. ``BENCH_SCALE=100,300``) (issues 11, 24).

For each scale: seeds a throwaway cluster, measures the floor (``psql \\copy`` out + in of the 11 source
tables, ``bench.pipeline_bench.floor``), then loops ingest -> transform -> load as the state machine does
(the transform's result, ``more_waiting`` included, is the load's event), into a warehouse with the
project's DDL (foreign keys), until the transform no longer reports ``more_waiting``. Each stage
invocation runs in a child process of its own (as each Lambda invocation is its own), against one moto
S3 server, so its peak memory and duration are its own. Prints per-batch figures (seconds and peak MB per
stage), the load's first/last batch ratio, execution (the sum of the stages' own seconds) and wall time
beside the floor, and the load average before and after. Then (issue 25) one incremental round after 30
simulated minutes of business and the dashboard on the caught-up warehouse (``bench.dashboard_bench.measure``;
each load reports the rollups' share of it), and (issue 22) ``totesys verify`` (``bench.verify_bench``).
Not a test: nothing asserts a time.
"""
import json
import logging
import multiprocessing
import os
import shutil
import socket
import sys
import time

from utils.config import DEFAULT_MAX_BATCH_ROWS

SCALES = [float(value) for value in os.environ.get("BENCH_SCALE", "100").split(",")]
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


def _time_key_steps():
    """Time the load's suspension and restoration of the foreign keys apart from its batches (the
    figures dict is filled in place: ``suspend_seconds``, ``restore_seconds``)."""
    from utils.load import run as load_run
    spent = {"suspend_seconds": 0.0, "restore_seconds": 0.0}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = round(spent[name] + time.perf_counter() - started, 2)
        return wrapper
    for name, function in (("suspend_seconds", "suspend_for_execution"),
                           ("restore_seconds", "restore_foreign_keys")):
        if hasattr(load_run, function):  # absent before issue 24: the bench also runs older commits
            setattr(load_run, function, timed(name, getattr(load_run, function)))
    return spent


def _tree_mb(folder):
    """MB of the files under ``folder`` (the invocation's /tmp)."""
    total = sum(os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(folder) for name in names)
    return round(total / 1024 / 1024, 1)


def _stage_child(stage, event, queue):
    import tempfile
    # The invocation's own /tmp, measured after it as Lambda's ephemeral storage.
    tmp = tempfile.mkdtemp(prefix=f"bench-{stage}-tmp-")
    os.environ["TMPDIR"] = tempfile.tempdir = tmp
    from ingest import lambda_handler as ingest_handler
    from load import lambda_handler as load_handler
    from transform import lambda_handler as transform_handler
    handler = {"ingest": ingest_handler, "transform": transform_handler, "load": load_handler}[stage]
    spent = _time_key_steps() if stage == "load" else {}
    if stage == "load":
        from bench.dashboard_bench import instrument_load, rollup_share
        batches = instrument_load()
    baseline = _peak_mb()
    profile = _profiler(stage)
    started = time.perf_counter()
    result = handler(event, None)
    seconds = time.perf_counter() - started
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.path.join(os.environ["BENCH_PROFILE_DIR"], f"{stage}-{os.getpid()}.prof"))
    rows = sum((result.get("tables") or {}).values()) if stage != "ingest" else len(result)
    queue.put({"seconds": round(seconds, 2), "peak_mb": _peak_mb(), "baseline_mb": baseline, "rows": rows,
               "event_bytes": len(json.dumps(event, default=str).encode()),
               "result_bytes": len(json.dumps(result, default=str).encode()), "tmp_mb": _tree_mb(tmp),
               "more_waiting": bool(result.get("more_waiting")) if stage == "transform" else None,
               "result": result if stage == "transform" else None,
               "batches": rollup_share(batches) if stage == "load" else None, **spent})
    shutil.rmtree(tmp, ignore_errors=True)


def _profiler(stage):
    """A running cProfile.Profile when BENCH_PROFILE_DIR is set and BENCH_PROFILE (comma-separated
    stages, default all) names ``stage``; its stats go to that folder, one file per invocation."""
    if not os.environ.get("BENCH_PROFILE_DIR"):
        return None
    if stage not in os.environ.get("BENCH_PROFILE", "ingest,transform,load").split(","):
        return None
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
    return profile


def invoke(stage, event=None):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_stage_child, args=(stage, event or {}, queue))
    child.start()
    figures = queue.get()
    child.join()
    if child.exitcode:
        raise SystemExit(f"{stage} failed (exit {child.exitcode})")
    figures["limits"] = _limit_findings(stage, figures)
    return figures


def _limit_findings(stage, figures):
    """AWS's limits for this invocation (totesys_local.limits against main-terraform's sizes), printed."""
    from totesys_local.limits import check
    from totesys_local.terraform_values import function_limits
    limits = function_limits()[stage]
    findings = check(stage, limits, request_bytes=figures["event_bytes"],
                     response_bytes=figures["result_bytes"], peak_mb=figures["peak_mb"],
                     tmp_mb=figures["tmp_mb"])
    for finding in findings:
        print(f"  limit {finding.level}: {finding.message}", flush=True)
    return [f"{finding.level}: {finding.message}" for finding in findings]


def _admin(admin_url, sql):
    from totesys_local.cluster import admin_connection
    from utils.db.connection import close_db_connection
    conn = admin_connection(admin_url)
    try:
        return conn.run(sql)
    finally:
        close_db_connection(conn)


def _log_slow_statements(admin_url, databases):
    """With BENCH_LOG_STATEMENTS_MS, the server logs each statement of ``databases`` taking at least that
    many ms (kept by ``_keep_server_log``): where a stage's time goes inside PostgreSQL."""
    threshold = os.environ.get("BENCH_LOG_STATEMENTS_MS")
    if not threshold:
        return
    from pg8000.native import identifier

    for name in databases:
        _admin(admin_url, f"ALTER DATABASE {identifier(name)} SET log_min_duration_statement = "
                          f"{int(threshold)}")


def _keep_server_log(ctx, label):
    """With BENCH_LOG_STATEMENTS_MS, a copy of the server's log beside the figures."""
    if not os.environ.get("BENCH_LOG_STATEMENTS_MS"):
        return
    datadir = _admin(ctx["admin_url"], "SELECT current_setting('data_directory')")[0][0]
    shutil.copy(os.path.join(datadir, "server.log"), ctx["workdir"] / f"scale-{label}-server.log")


def _load_average():
    return round(os.getloadavg()[0], 2)


def backfill(scale, max_rows):
    """One scale's figures (see the module docstring)."""
    import boto3

    from bench.common import seeded_cluster
    from bench.pipeline_bench import floor
    from totesys_local.cluster import create_database, with_database
    from utils.db.connection import credentials_from_url

    label = f"{scale:g}".replace(".", "_")
    with seeded_cluster(scale) as ctx:
        load_before = _load_average()
        floor_figures = floor(ctx, f"scale_floor_{label}")
        print(f"x{scale:g} floor {floor_figures}", flush=True)
        create_database(ctx["admin_url"], f"scale_warehouse_{label}")
        warehouse_url = with_database(ctx["admin_url"], f"scale_warehouse_{label}")
        _log_slow_statements(ctx["admin_url"], [f"scale_warehouse_{label}", "bench_totesys"])
        s3 = boto3.client("s3")
        buckets = (f"scale-ingest-{label}", f"scale-processed-{label}")
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        secrets = boto3.client("secretsmanager")
        for name, url in ((f"scale/totesys/{label}", ctx["source_url"]),
                          (f"scale/warehouse/{label}", warehouse_url)):
            secrets.create_secret(Name=name, SecretString=json.dumps(credentials_from_url(url)))
        os.environ.update({"INGEST_BUCKET": buckets[0], "PROCESSED_BUCKET": buckets[1],
                           "TOTESYS_SECRET_ID": f"scale/totesys/{label}",
                           "WAREHOUSE_SECRET_ID": f"scale/warehouse/{label}"})
        rounds, started = [], time.perf_counter()
        while len(rounds) < MAX_ROUNDS:
            figures = {stage: invoke(stage) for stage in ("ingest", "transform")}
            figures["load"] = invoke("load", figures["transform"].pop("result"))
            rounds.append(figures)
            print(f"x{scale:g} batch {len(rounds)}: " + ", ".join(
                f"{stage} {f['seconds']} s {f['peak_mb']} MB {f['tmp_mb']} MB /tmp "
                f"{f['result_bytes']} B out" for stage, f in figures.items())
                + f" (load average {_load_average()})", flush=True)
            if not figures["transform"]["more_waiting"]:
                break
        wall = time.perf_counter() - started
        from bench import dashboard_bench, verify_bench
        from totesys_local.generator import simulate
        simulate(ctx["source_url"], minutes=30, seed=7)
        incremental = {stage: invoke(stage) for stage in ("ingest", "transform")}
        incremental["load"] = invoke("load", incremental["transform"].pop("result"))
        print(f"x{scale:g} incremental: {incremental['load']['batches']}", flush=True)
        dashboard = dashboard_bench.measure(warehouse_url, ctx["workdir"])
        execution = sum(r[stage]["seconds"] for r in rounds for stage in ("ingest", "transform", "load"))
        loads = [r["load"]["seconds"] for r in rounds if r["load"]["rows"]]
        # the batches' own time: without the once-per-execution suspension and validation of the keys
        batch_loads = [round(r["load"]["seconds"] - r["load"]["suspend_seconds"]
                             - r["load"]["restore_seconds"], 2) for r in rounds if r["load"]["rows"]]
        summary = {"scale": scale, "rows_seeded": sum(ctx["rows_seeded"].values()),
                   "max_batch_rows": max_rows, "batches": len(rounds),
                   "floor_seconds": floor_figures["seconds"],
                   "execution_seconds": round(execution, 1), "wall_seconds": round(wall, 1),
                   "execution_over_floor": round(execution / floor_figures["seconds"], 2),
                   "wall_over_floor": round(wall / floor_figures["seconds"], 2),
                   "load_seconds_per_batch": loads,
                   "batch_load_seconds": batch_loads,
                   "batch_load_last_over_first": (round(batch_loads[-1] / batch_loads[0], 2)
                                                  if batch_loads else None),
                   # per million rows written: the last batch of a backfill is a remainder
                   "batch_load_seconds_per_m_rows": [
                       round(seconds / r["load"]["rows"] * 1e6, 2) for seconds, r in
                       zip(batch_loads, [r for r in rounds if r["load"]["rows"]])],
                   "keys_suspend_seconds": round(sum(r["load"]["suspend_seconds"] for r in rounds), 2),
                   "keys_validate_seconds": round(sum(r["load"]["restore_seconds"] for r in rounds), 2),
                   "stages": {stage: {"max_peak_mb": max(r[stage]["peak_mb"] for r in rounds),
                                      "max_seconds": max(r[stage]["seconds"] for r in rounds),
                                      "total_seconds": round(sum(r[stage]["seconds"] for r in rounds), 1)}
                              for stage in ("ingest", "transform", "load")},
                   "warehouse_rows_written": sum(r["load"]["rows"] for r in rounds),
                   "limit_errors": sum(line.startswith("error") for r in rounds for stage in r.values()
                                       for line in stage["limits"]),
                   "limit_warnings": sum(line.startswith("warning") for r in rounds for stage in r.values()
                                         for line in stage["limits"]),
                   "rollups_per_batch": [batch for r in rounds for batch in r["load"]["batches"]],
                   "incremental_load": incremental["load"]["batches"], "dashboard": dashboard,
                   "load_average": {"before": load_before, "after": _load_average()}}
        summary["verify"] = verify_bench.run(ctx["source_url"], warehouse_url, buckets[0])
        _keep_server_log(ctx, label)
        figures = json.dumps({"summary": summary, "rounds": rounds}, indent=2)
        (ctx["workdir"] / f"scale-{label}.json").write_text(figures)
        print(json.dumps(summary, indent=2), flush=True)
        return summary


def table(summaries):
    """The scales side by side (markdown)."""
    lines = ["| figure | " + " | ".join(f"x{s['scale']:g}" for s in summaries) + " |",
             "|---|" + "---|" * len(summaries)]
    for label, value in (
            ("source rows", lambda s: f"{s['rows_seeded']:,}"), ("batches", lambda s: s["batches"]),
            ("psql \\copy floor (s)", lambda s: s["floor_seconds"]),
            ("execution / wall (s)", lambda s: f"{s['execution_seconds']} / {s['wall_seconds']}"),
            ("execution / wall over the floor",
             lambda s: f"{s['execution_over_floor']} / {s['wall_over_floor']}"),
            ("load per batch (s)", lambda s: ", ".join(str(x) for x in s["load_seconds_per_batch"])),
            ("batch load without the keys' steps (s)",
             lambda s: ", ".join(str(x) for x in s["batch_load_seconds"])),
            ("batch load: last / first", lambda s: s["batch_load_last_over_first"]),
            ("batch load per million rows written (s)",
             lambda s: ", ".join(str(x) for x in s["batch_load_seconds_per_m_rows"])),
            ("keys suspended / validated once (s)", lambda s: f"{s['keys_suspend_seconds']} / "
                                                              f"{s['keys_validate_seconds']}"),
            ("limit findings (errors / warnings)", lambda s: f"{s['limit_errors']} / {s['limit_warnings']}"),
            ("peak MB ingest / transform / load", lambda s: " / ".join(
                str(s["stages"][stage]["max_peak_mb"]) for stage in ("ingest", "transform", "load"))),
            ("verify: seconds (CPU)", lambda s: f"{s['verify']['seconds']} ({s['verify']['cpu_seconds']})"),
            ("dashboard: slowest section / page SQL (ms)",
             lambda s: f"{s['dashboard']['slowest_section_ms']} / {s['dashboard']['page_sql_ms']}"),
            ("load average before / after", lambda s: f"{s['load_average']['before']} / "
                                                      f"{s['load_average']['after']}")):
        lines.append(f"| {label} | " + " | ".join(str(value(s)) for s in summaries) + " |")
    return "\n".join(lines)


def main():
    from moto.server import ThreadedMotoServer

    max_rows = int(os.environ.get("MAX_BATCH_ROWS", DEFAULT_MAX_BATCH_ROWS))
    port = _free_port()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server's line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "eu-west-2", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "MAX_BATCH_ROWS": str(max_rows), "LOG_LEVEL": "WARNING",
                       "POWERTOOLS_METRICS_DISABLED": "true"})
    try:
        summaries = [backfill(scale, max_rows) for scale in SCALES]
    finally:
        server.stop()
    print(table(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
