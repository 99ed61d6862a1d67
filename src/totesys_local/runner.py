"""The main job on a laptop: one pipeline execution through the real state machine definition.

PostgreSQL is real (the embedded cluster under ``--state-dir`` unless URLs are given); S3, Secrets
Manager, SNS, Lambda and Step Functions are moto, in-process. moto keeps nothing on disk, so the
buckets' objects are restored from ``<state-dir>/s3`` before the run and saved back after a run
that succeeded (a failed run saves nothing: the local state stays exactly as it was).
"""
import fcntl
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import boto3

from totesys_local import cluster as local_pg
from utils.config import DEFAULT_TOTESYS_SECRET_ID, DEFAULT_WAREHOUSE_SECRET_ID
from totesys_local.aws_emulation import (STAGES, deploy_pipeline, emulated_aws, published_alerts,
                                         wait_for_execution)

REGION = "eu-west-2"
BUCKETS = {"INGEST_BUCKET": "totesys-local-ingest", "PROCESSED_BUCKET": "totesys-local-processed"}
SECRETS = {"TOTESYS_SECRET_ID": DEFAULT_TOTESYS_SECRET_ID, "WAREHOUSE_SECRET_ID": DEFAULT_WAREHOUSE_SECRET_ID}
SOURCE_DB, WAREHOUSE_DB = "totesys", "warehouse"


class RunError(Exception):
    """The local run could not start or did not finish; the message is for the user."""


# -- databases ----------------------------------------------------------------------------------

def _has_tables(url):
    from utils.db_connections import close_db_connection, connect_to_db, credentials_from_url
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        rows = conn.run("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        return rows[0][0] > 0
    finally:
        close_db_connection(conn)


def _ensure_database(pg, name):
    conn = pg.connect()
    try:
        exists = conn.run("SELECT 1 FROM pg_database WHERE datname = :name", name=name)
    finally:
        conn.close()
    if not exists:
        pg.create_database(name)


def resolve_databases(source, warehouse, state_dir, out):
    """Return (source_url, warehouse_url, embedded cluster or None), seeding an embedded totesys."""
    if source and warehouse:
        return source, warehouse, None
    pg = local_pg.local_cluster(state_dir)
    _write_pgpass(pg, state_dir)
    if not source:
        _ensure_database(pg, SOURCE_DB)
        source = pg.url(SOURCE_DB)
        if not _has_tables(source):
            from totesys_local.generator import seed
            started = time.monotonic()
            counts = seed(source, scale=1, seed=42)
            out(f"seeded the embedded totesys at scale 1 ({sum(counts.values()):,} rows, "
                f"{time.monotonic() - started:.1f} s)")
    if not warehouse:
        _ensure_database(pg, WAREHOUSE_DB)
        warehouse = pg.url(WAREHOUSE_DB)
    return source, warehouse, pg


def embedded_source_url(state_dir):
    """URL of the embedded totesys database that `totesys run` created under ``state_dir``."""
    if not (Path(state_dir) / "cluster.json").exists():
        raise RunError(f"no embedded totesys under {state_dir}/ yet: run `make run` first, or give --target")
    return local_pg.local_cluster(state_dir).url(SOURCE_DB)


def _write_pgpass(pg, state_dir):
    info = pg.info
    path = Path(state_dir) / "pgpass"
    path.write_text(f"{info.host}:{info.port}:*:{info.user}:{info.password}\n")
    os.chmod(path, 0o600)


def describe_url(url):
    """A database URL with the password masked."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return f"postgresql://{user}{parts.hostname}:{parts.port or 5432}{parts.path}"


# -- local buckets ------------------------------------------------------------------------------

def restore_buckets(s3_dir):
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in BUCKETS.values():
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        root = s3_dir / bucket
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file():
                s3.put_object(Bucket=bucket, Key=path.relative_to(root).as_posix(), Body=path.read_bytes())


def save_buckets(s3_dir):
    """Write every object to ``s3_dir`` (atomically per file); return the number of new files."""
    s3 = boto3.client("s3", region_name=REGION)
    written = 0
    for bucket in BUCKETS.values():
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                target = s3_dir / bucket / item["Key"]
                is_state = item["Key"].startswith("_state/")
                if target.exists() and not is_state:
                    continue  # data objects are immutable
                target.parent.mkdir(parents=True, exist_ok=True)
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                temp = target.with_name(target.name + ".tmp")
                temp.write_bytes(body)
                os.replace(temp, target)
                written += 0 if is_state else 1
    return written


# -- the run -------------------------------------------------------------------------------------

@contextmanager
def _environment(values):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _exclusive(state_dir):
    lock_path = Path(state_dir) / "run.lock"
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another totesys run is using {state_dir}; wait for it to finish") from None
        yield


def _handlers(prefix):
    import ingest
    import load
    import transform
    return {f"{prefix}-ingest": ingest.lambda_handler,
            f"{prefix}-transform": transform.lambda_handler,
            f"{prefix}-load": load.lambda_handler}


class Progress:
    """Prints one line per stage as the execution's history arrives."""

    def __init__(self, out):
        self.out = out
        self.started = {}
        self.seconds = {}
        self.failed = None

    def __call__(self, event):
        kind = event["type"]
        details = event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails") or {}
        stage = details.get("name", "").lower()
        if kind == "TaskStateEntered" and stage in STAGES:
            self.started[stage] = event["timestamp"]
            self.out(f"  [{STAGES.index(stage) + 1}/3] {stage:<9} running ...")
        elif kind == "TaskStateExited" and stage in STAGES and stage in self.started:
            seconds = (event["timestamp"] - self.started[stage]).total_seconds()
            self.seconds[stage] = seconds
            if '"error"' in details.get("output", "") and self.failed is None:
                self.failed = stage
                self.out(f"  [{STAGES.index(stage) + 1}/3] {stage:<9} FAILED after {seconds:.2f} s")
            else:
                self.out(f"  [{STAGES.index(stage) + 1}/3] {stage:<9} done in {seconds:.2f} s")
        elif kind == "SucceedStateEntered" and details.get("name") == "NoChanges":
            self.out("  no changes in totesys since the last batch: transform and load skipped")


def run_pipeline(source_url, warehouse_url, state_dir, out=print):
    """Run one execution; return a summary dict. Raises RunError with a one-line message on failure."""
    state_dir = Path(state_dir)
    s3_dir = state_dir / "s3"
    log_path = state_dir / "logs" / f"run-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fake_key = "local"  # moto accepts any credentials; these can never reach a real account
    env = {"AWS_ACCESS_KEY_ID": fake_key, "AWS_SECRET_ACCESS_KEY": fake_key,
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "TOTESYS_LOG_FILE": str(log_path),
           **BUCKETS, **SECRETS}
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_PROFILE", None)
    with _environment(env):
        handlers = _handlers("totesys")
        with emulated_aws(handlers):
            restore_buckets(s3_dir)
            from utils.db_connections import credentials_from_url
            secrets = boto3.client("secretsmanager", region_name=REGION)
            for secret_id, url in ((SECRETS["TOTESYS_SECRET_ID"], source_url),
                                   (SECRETS["WAREHOUSE_SECRET_ID"], warehouse_url)):
                secrets.create_secret(Name=secret_id, SecretString=json.dumps(credentials_from_url(url)))
            arns = deploy_pipeline("totesys")
            sfn = boto3.client("stepfunctions", region_name=REGION)
            execution = sfn.start_execution(stateMachineArn=arns["state_machine_arn"], input="{}",
                                            name=f"local-{time.strftime('%Y%m%dT%H%M%S')}")
            progress = Progress(out)
            started = time.monotonic()
            result = wait_for_execution(execution["executionArn"], on_event=progress)
            elapsed = time.monotonic() - started
            if result["status"] != "SUCCEEDED":
                alerts = published_alerts(arns["alert_topic_arn"])
                detail = alerts[-1]["message"] if alerts else f"{result.get('error')}: {result.get('cause')}"
                raise RunError(f"{detail} (full logs: {log_path}; warehouse and local state unchanged)")
            output = json.loads(result["output"])
            summary = _summarise(output, progress.seconds, elapsed)
            summary["new_files"] = save_buckets(s3_dir)
    summary["log"] = str(log_path)
    return summary


def _summarise(output, seconds, elapsed):
    s3 = boto3.client("s3", region_name=REGION)
    files = (output.get("ingest") or {}).get("files") or {}
    manifest = _latest_ingest_manifest(s3)
    entries = (manifest or {}).get("tables") or {}
    # Row counts come from this run's manifest (the ingest writes one only when a table has rows).
    ingested = {table: entries[table]["rows"] for table in files if table in entries}
    load_result = (output.get("load") or {}).get("result") or {}
    return {"ingested": ingested, "loaded": load_result.get("tables", {}),
            "batches": load_result.get("batches", []), "seconds": seconds, "elapsed": elapsed,
            "bounds": _batch_bounds(manifest)}


def _latest_ingest_manifest(s3):
    """The manifest of the latest ingest batch with data (named by the ingest state pointer), or None."""
    from utils.state import read_manifest, read_state
    from utils.tables import check_source_table
    state, _ = read_state(s3, BUCKETS["INGEST_BUCKET"], "ingest")
    key = state.get("manifest_key")
    return read_manifest(s3, BUCKETS["INGEST_BUCKET"], key, check_source_table, "batch_time") if key else None


def _batch_bounds(manifest):
    """(low, high) of a batch: the earliest table lower bound and the batch time."""
    if manifest is None:
        return None
    lows = [entry["low"] for entry in manifest["tables"].values() if entry.get("low")]
    return (min(lows) if lows else "beginning of data", manifest["batch_time"])


def print_summary(summary, warehouse_line, out=print):
    ingested, loaded = summary["ingested"], summary["loaded"]
    if ingested:
        out("\nrows ingested (source table -> rows)")
        for table, rows in ingested.items():
            out(f"  {table:<32}{rows:>10,}")
        out(f"  {'total':<32}{sum(ingested.values()):>10,}")
    if loaded:
        out("\nrows loaded (warehouse table -> rows)")
        for table, rows in loaded.items():
            out(f"  {table:<32}{rows:>10,}")
        out(f"  {'total':<32}{sum(loaded.values()):>10,}")
    if not ingested:
        out("\nnothing new: totesys has no changes since the last batch")
    per_stage = ", ".join(f"{stage} {secs:.2f}" for stage, secs in summary["seconds"].items())
    out(f"\nseconds per stage: {per_stage} (execution {summary['elapsed']:.2f} s)")
    if summary.get("bounds"):
        low, high = summary["bounds"]
        label = "batch bounds" if ingested else "last batch with changes"
        out(f"{label}: from {low} to {high} (database clock, UTC)")
    out(f"structured logs: {summary['log']}")
    out(f"warehouse: {warehouse_line}")


def main(args):
    """Entry point for ``totesys run|psql|stop`` (called by totesys_local.cli)."""
    state_dir = Path(args.state_dir)
    if args.command == "stop":
        was_running = local_pg.stop_local_cluster(state_dir)
        print("embedded PostgreSQL stopped" if was_running else "embedded PostgreSQL was not running")
        return 0
    if args.command == "psql":
        return _psql(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _exclusive(state_dir):
            print(f"ToteSys local run (state in {state_dir}/)")
            source, warehouse, pg = resolve_databases(args.source, args.warehouse, state_dir, print)
            print(f"  source    {describe_url(source)}")
            print(f"  warehouse {describe_url(warehouse)}")
            summary = run_pipeline(source, warehouse, state_dir)
    except RunError as err:
        print(f"totesys run: FAILED: {err}", file=sys.stderr)
        return 1
    if pg is not None and not args.warehouse:
        line = (f"PGPASSFILE={state_dir / 'pgpass'} psql -h {pg.info.host} -p {pg.info.port} "
                f"-U {pg.info.user} {WAREHOUSE_DB}   (or: make psql)")
    else:
        line = f'psql "{describe_url(warehouse)}"'
    print_summary(summary, line)
    return 0


def _psql(state_dir):
    record = state_dir / "cluster.json"
    if not record.exists():
        print("no embedded warehouse yet: run `make run` first", file=sys.stderr)
        return 1
    pg = local_pg.local_cluster(state_dir)
    psql = shutil.which("psql") or os.path.join(pg.info.bindir, "psql")
    if not os.path.exists(psql):
        print(f"psql not found; connect to {describe_url(pg.url(WAREHOUSE_DB))} "
              f"(password in {record})", file=sys.stderr)
        return 1
    env = dict(os.environ, PGPASSWORD=pg.info.password)
    args = [psql, "-h", pg.info.host, "-p", str(pg.info.port), "-U", pg.info.user, WAREHOUSE_DB]
    os.execvpe(psql, args, env)  # nosec B606 - the user asked for psql
    return 0  # pragma: no cover - execvpe does not return
