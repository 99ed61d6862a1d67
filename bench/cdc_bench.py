"""CDC benchmark (issue 23): ingest alone, INGEST_MODE=cdc beside cursor mode, on one seeded totesys.

Figures: the first run of each mode (cursor's backfill, CDC's slot + consistent full snapshot), a run with
nothing new, and an incremental run after 30 minutes of simulated business (``totesys simulate``), each
mode reading the same changes (CDC first, then cursor: the cursor's window is unaffected by the slot).
Repeated ROUNDS times; the median is reported. Both modes land into their own emulated buckets (moto,
in process), MAX_BATCH_ROWS=0 (one batch, as the CDC snapshot).

    BENCH_SCALE=10 venv/bin/python -m bench.cdc_bench      (×100: BENCH_SCALE=100; seeding takes long)

Prints the figures and the load average; writes bench/results/cdc-<scale>.json. Not a test.
"""
import json
import os
import statistics
import sys
import time

from moto import mock_aws

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MODES = ("cdc", "cursor")


def _timed(mode):
    from utils.ingest.modes import run_ingest
    os.environ["INGEST_MODE"] = mode
    os.environ["INGEST_BUCKET"] = f"bench-{mode}-ingest"
    started = time.perf_counter()
    result = run_ingest({})
    return round(time.perf_counter() - started, 3), len(result)


def run(ctx):
    """The figures on ``ctx["source_url"]``; the environment and the source are left as they were (the
    slot is dropped at the end)."""
    saved = dict(os.environ)
    try:
        return _run(ctx)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
        from utils.ingest.cdc.slot import drop_slot
        conn = connect_to_db(credentials=credentials_from_url(ctx["source_url"]))
        try:
            drop_slot(conn, "bench_cdc")
        finally:
            close_db_connection(conn)


def _run(ctx):
    from totesys_local.aws_emulation import account_environment, create_buckets, put_credentials_secret
    from totesys_local.generator import simulate
    os.environ.update(account_environment(PROCESSED_BUCKET="bench-processed",
                                          TOTESYS_SECRET_ID="bench/totesys",
                                          MAX_BATCH_ROWS="0", CDC_SLOT_NAME="bench_cdc"))
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    figures = {}
    with mock_aws():
        create_buckets([f"bench-{mode}-ingest" for mode in MODES] + ["bench-processed"])
        put_credentials_secret("bench/totesys", ctx["source_url"])
        for mode in ("cursor", "cdc"):
            figures[f"{mode}_first_run_seconds"] = _timed(mode)[0]
        nothing = {mode: [] for mode in MODES}
        incremental = {mode: [] for mode in MODES}
        for round_number in range(ROUNDS):
            for mode in MODES:
                nothing[mode].append(_timed(mode)[0])
            simulate(ctx["source_url"], minutes=30, seed=100 + round_number)
            for mode in MODES:
                incremental[mode].append(_timed(mode)[0])
        for mode in MODES:
            figures[f"{mode}_nothing_new_seconds"] = statistics.median(nothing[mode])
            figures[f"{mode}_incremental_30min_seconds"] = statistics.median(incremental[mode])
            figures[f"{mode}_incremental_runs"] = incremental[mode]
    figures["load_average"] = os.getloadavg()
    print(f"cdc: {json.dumps(figures)}", flush=True)
    return figures


if __name__ == "__main__":
    from bench.common import SCALE, seeded_cluster
    with seeded_cluster() as context:
        result = run(context)
        result.update(scale=SCALE, seed_seconds=context["seed_seconds"])
        (context["workdir"] / f"cdc-{SCALE:g}.json").write_text(json.dumps(result, indent=2))
    sys.exit(0)
