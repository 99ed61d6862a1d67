"""The main job on a laptop: one pipeline execution through the real state machine definition.

PostgreSQL is real (the embedded cluster under ``--state-dir`` unless URLs are given); S3, Secrets
Manager, SNS, Lambda and Step Functions are moto, in-process. moto keeps nothing on disk, so the
buckets' objects are restored from ``<state-dir>/s3`` before the run and saved back after EVERY
execution, failed or not, as S3 keeps whatever a failed execution wrote (``local_state.save_buckets``:
data objects first, then the state pointers that name them, each file written atomically). A failed
run also leaves ``<state-dir>/last_error.json``, removed by the next successful run; ``totesys
pending`` (``pending.py``) shows it with the batches waiting downstream.
"""
import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from argparse import Namespace
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import (Any, Callable, Dict, Iterator, List, Mapping, NotRequired, Optional, Sequence, Tuple,
                    TypedDict, Union)

import boto3

from totesys_local.errors import LocalError
from totesys_local import cluster as local_pg
from totesys_local import folder_identity
from totesys_local import pending as pending_batches
from totesys_local.local_state import (BUCKETS, LAST_ERROR_FILE, REGION, clear_failure, record_failure,
                                       save_buckets)
from totesys_local.rounds import Handler, Round, after_each_load, recording, totals
from utils.config import DEFAULT_TOTESYS_SECRET_ID, DEFAULT_WAREHOUSE_SECRET_ID
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url, describe_url
from utils.contracts import HeldDeletes, IngestManifest, IngestState
from utils.db.identity import DatabaseIdentity, DatabaseIdentityError, database_identity
from utils.errors import CredentialsError, DatabaseUnavailableError

SOURCE_DB, WAREHOUSE_DB = "totesys", "warehouse"
SECRETS = {"TOTESYS_SECRET_ID": DEFAULT_TOTESYS_SECRET_ID, "WAREHOUSE_SECRET_ID": DEFAULT_WAREHOUSE_SECRET_ID}


class RunError(LocalError):
    """The local run could not start or did not finish; the message is for the user."""


# (low, high, time zone) of a batch: ``_batch_bounds``.
Bounds = Tuple[str, str, str]


class RunSummary(TypedDict):
    """What one execution did, as ``print_summary`` shows it (``run_pipeline``'s result): rows per table
    ingested (source) and loaded (warehouse), the batches loaded and transformed, the rows quarantined and
    deleted, what the ingest state holds (ignored columns, held deletions), seconds per stage and in all,
    the batch bounds; with rounds (bounded batches), each round's rows and ``more_waiting``."""
    ingested: Dict[str, int]
    loaded: Dict[str, int]
    batches: List[str]
    transformed: List[str]
    rejected_rows: int
    rejected: Dict[str, int]
    deleted_rows: int
    deleted: Dict[str, int]
    ignored_columns: Dict[str, List[str]]
    held_deletes: Dict[str, HeldDeletes]
    seconds: Dict[str, float]
    elapsed: float
    bounds: Optional[Bounds]
    rounds: NotRequired[List[Dict[str, Any]]]
    more_waiting: NotRequired[bool]
    new_files: NotRequired[int]
    limit_warnings: NotRequired[List[str]]
    log: NotRequired[str]


# -- databases ----------------------------------------------------------------------------------

def _has_tables(url: str) -> bool:
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        rows = conn.run("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        return rows[0][0] > 0
    finally:
        close_db_connection(conn)


def _ensure_database(pg: local_pg.Cluster, name: str) -> None:
    conn = pg.connect()
    try:
        exists = conn.run("SELECT 1 FROM pg_database WHERE datname = :name", name=name)
    finally:
        conn.close()
    if not exists:
        pg.create_database(name)


def resolve_databases(source: Optional[str], warehouse: Optional[str], state_dir: Union[str, Path],
                      out: Callable[[str], None]) -> Tuple[str, str, Optional[local_pg.Cluster]]:
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


def embedded_source_url(state_dir: Union[str, Path]) -> str:
    """URL of the embedded totesys database that `totesys run` created under ``state_dir``."""
    if not (Path(state_dir) / "cluster.json").exists():
        raise RunError(f"no embedded totesys under {state_dir}/ yet: run `make run` first, or give --target")
    return local_pg.local_cluster(state_dir).url(SOURCE_DB)


def _write_pgpass(pg: local_pg.Cluster, state_dir: Union[str, Path]) -> None:
    info = pg.info
    path = Path(state_dir) / "pgpass"
    path.write_text(f"{info.host}:{info.port}:*:{info.user}:{info.password}\n")
    os.chmod(path, 0o600)


# -- the run -------------------------------------------------------------------------------------

@contextmanager
def applied_environment(values: Mapping[str, str]) -> Iterator[None]:
    """The process environment with ``values`` set, restored on exit (the stages read their settings
    from it, as a Lambda does)."""
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
def _exclusive(state_dir: Union[str, Path]) -> Iterator[None]:
    lock_path = Path(state_dir) / "run.lock"
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another totesys run is using {state_dir}; wait for it to finish") from None
        yield


def stage_handlers(prefix: str) -> Dict[str, Handler]:
    """{function name: handler} of the pipeline's functions named ``<prefix>-<stage>``, each round recorded
    and saved once loaded (the local runner, the emulator and the model-based test run the same ones)."""
    import ingest
    import load
    import transform
    # Every round is recorded, and saved once loaded (totesys_local.rounds).
    transform_handler, load_handler = after_each_load(transform.lambda_handler, load.lambda_handler)
    return {f"{prefix}-ingest": ingest.lambda_handler,
            f"{prefix}-transform": transform_handler,
            f"{prefix}-load": load_handler}


def _caught_error(output: str) -> Optional[Dict[str, Any]]:
    """The error a stage's Catch put at ``$.error`` ({Error, Cause}) as {error_type, message}, or None."""
    try:
        error = json.loads(output).get("error")
    except (TypeError, ValueError, AttributeError):
        return None
    if not isinstance(error, dict) or "Error" not in error:
        return None
    message = error.get("Cause") or ""
    with suppress(TypeError, ValueError, AttributeError):
        message = json.loads(message).get("errorMessage", message)  # a Lambda error's JSON
    return {"error_type": error["Error"], "message": message}


class Progress:
    """Prints one line per stage as the execution's history arrives; remembers the first failure."""

    def __init__(self, out: Callable[[str], None]) -> None:
        from totesys_local.aws_emulation import STAGES
        self.stages = STAGES
        self.out = out
        self.started: Dict[str, datetime] = {}
        self.seconds: Dict[str, float] = {}
        self.failed: Optional[str] = None
        self.error: Optional[Dict[str, Any]] = None

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event["type"]
        details = event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails") or {}
        stage = details.get("name", "").lower()
        if kind == "TaskStateEntered" and stage in self.stages:
            self.started[stage] = event["timestamp"]
            self.out(f"  [{self.stages.index(stage) + 1}/3] {stage:<9} running ...")
        elif kind == "TaskStateExited" and stage in self.stages and stage in self.started:
            seconds = (event["timestamp"] - self.started[stage]).total_seconds()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds  # summed over the rounds
            error = _caught_error(details.get("output", ""))
            if error and self.failed is None:
                self.failed = stage
                self.error = {"stage": stage, **error}
                self.out(f"  [{self.stages.index(stage) + 1}/3] {stage:<9} FAILED after {seconds:.2f} s")
            else:
                self.out(f"  [{self.stages.index(stage) + 1}/3] {stage:<9} done in {seconds:.2f} s")


def local_account_environment(**variables: str) -> Dict[str, str]:
    """The environment of the local emulated account: its bucket and secret names (what the emulated
    deploy names in the roles' policies) and ``variables``."""
    from totesys_local.aws_emulation import account_environment
    return account_environment(REGION, **BUCKETS, **SECRETS, **variables)


def run_pipeline(source_url: str, warehouse_url: str, state_dir: Union[str, Path],
                 out: Callable[[str], None] = print,
                 request: Optional[Mapping[str, Any]] = None) -> RunSummary:
    """Run one execution; return a summary dict. Raises RunError with a one-line message on failure.
    ``request``: the execution input (the ingest event; default ``{}``), e.g. ``{"resync": [...]}``.

    Whatever the execution wrote is saved to ``state_dir`` either way; a failure is also recorded
    in ``state_dir/last_error.json``, and a success removes that file."""
    # moto is a development dependency: only the commands that run the pipeline import it.
    from totesys_local.aws_emulation import (UNSET_VARIABLES, denials, limit_findings, pipeline_account,
                                             published_alerts, put_credentials_secret, wait_for_execution)
    from totesys_local.lazy_s3 import lazy_buckets
    state_dir = Path(state_dir)
    s3_dir = state_dir / "s3"
    stamp = time.strftime('%Y%m%dT%H%M%S')
    # One file per run, even for two runs in the same second of one process.
    log_path = state_dir / "logs" / f"run-{stamp}-{uuid.uuid4().hex[:6]}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    folder = _folder_identity(state_dir)
    env = local_account_environment(TOTESYS_LOG_FILE=str(log_path))
    for variable in UNSET_VARIABLES:
        os.environ.pop(variable, None)
    with applied_environment(env):
        handlers = stage_handlers("totesys")
        # A fresh emulated account with the pipeline deployed, or the one the local emulator keeps.
        with pipeline_account(handlers, "totesys") as arns, lazy_buckets(s3_dir):
            put_credentials_secret(SECRETS["TOTESYS_SECRET_ID"], source_url)
            put_credentials_secret(SECRETS["WAREHOUSE_SECRET_ID"], warehouse_url)
            sfn = boto3.client("stepfunctions", region_name=REGION)
            progress = Progress(out)
            started = time.monotonic()
            with recording(s3_dir, _ingest_state().get("manifest_key")) as recorded:
                execution = sfn.start_execution(stateMachineArn=arns["state_machine_arn"],
                                                input=json.dumps(request or {}),
                                                name=f"local-{stamp}-{uuid.uuid4().hex[:6]}")
                try:
                    result = wait_for_execution(execution["executionArn"], on_event=progress)
                except BaseException:
                    if _folder_identity(state_dir) == folder:
                        _save_state(state_dir, log_path, progress)
                    raise
                if _folder_identity(state_dir) != folder:
                    raise RunError(_folder_deleted_message(state_dir, result, progress))
                # As S3 does: what the execution wrote stays, whether it succeeded or not.
                new_files = _save_state(state_dir, log_path, progress) + recorded.saved
                if recorded.failure is not None and not isinstance(recorded.failure, Exception):
                    raise recorded.failure  # a kill or interrupt met in the execution's thread
            elapsed = time.monotonic() - started
            if result["status"] != "SUCCEEDED":
                failure = progress.error or {"stage": None, "error_type": result.get("error"),
                                             "message": result.get("cause")}
                refused = denials()
                if refused:  # what AWS would refuse: the stage, the action and the resource, in one line
                    failure = {"stage": refused[0].split(":")[0], "error_type": "AccessDenied",
                               "message": refused[0]}
                record_failure(state_dir, failure, log_path)
                if refused:
                    detail = f"ToteSys pipeline FAILED: {refused[0]}"
                elif progress.error:  # the stage's own error, without the Lambda stack trace of the alert
                    detail = (f"ToteSys pipeline FAILED in stage {failure['stage']}: "
                              f"{failure['error_type']}: {failure['message']}")
                else:
                    alerts = published_alerts(arns["alert_topic_arn"])
                    detail = (alerts[-1]["message"] if alerts
                              else f"{result.get('error')}: {result.get('cause')}")
                raise RunError(f"{detail} (full logs: {log_path}; the warehouse keeps every batch loaded "
                               "before; `totesys pending` lists what waits, `totesys retry` runs again)")
            clear_failure(state_dir)
            output = json.loads(result["output"])
            summary = _summarise(output, progress.seconds, elapsed, recorded.rounds)
            summary["new_files"] = new_files
            summary["limit_warnings"] = [finding.message for finding in limit_findings()]
    summary["log"] = str(log_path)
    return summary


def _folder_identity(folder: Union[str, Path]) -> Optional[Tuple[int, int]]:
    """(device, inode) of ``folder``, None when it is gone: a folder deleted and made again differs."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _folder_deleted_message(state_dir: Path, result: Mapping[str, Any], progress: Progress) -> str:
    """What happened when the state folder was deleted (or replaced) while the execution ran: nothing
    is saved (a new folder holding only what this execution touched would name files it does not
    hold), and the execution's own outcome is told as it is, not as a failure of its own."""
    if result["status"] == "SUCCEEDED":
        load = (json.loads(result["output"]).get("load") or {}).get("result") or {}
        loaded = load.get("batches") or []
        held = f" and the warehouse holds batch(es) {', '.join(loaded)}" if loaded else ""
        outcome = f"the execution itself SUCCEEDED{held}"
    else:
        stage = progress.failed or "an unknown stage"
        outcome = f"the execution itself FAILED in {stage} ({result.get('error') or 'see the log'})"
    return (f"the state folder {state_dir} was deleted during the run: {outcome}; nothing was saved to the "
            "folder. The next run starts a new state folder from the beginning of the data")


def _save_state(state_dir: Path, log_path: Path, progress: Progress) -> int:
    """save_buckets, or a RunError saying which file could not be written, at which point of the run
    and why (a full disk), with last_error.json written when the disk still takes it."""
    try:
        return save_buckets(Path(state_dir) / "s3")
    except OSError as err:
        stage = progress.failed or (list(progress.seconds)[-1] if progress.seconds else None)
        where = f"after the {stage} stage" if stage else "before any stage ran"
        message = (f"could not save the execution's files to the state folder ({where}): cannot write "
                   f"{err.filename}: {err.strerror}")
        try:
            record_failure(state_dir, {"stage": "save", "error_type": type(err).__name__,
                                       "message": message}, log_path)
            recorded = f"; recorded in {Path(state_dir) / LAST_ERROR_FILE}"
        except OSError as again:
            recorded = f"; {LAST_ERROR_FILE} could not be written either ({again.strerror})"
        raise RunError(f"{message}{recorded}. Free some space and run `totesys retry`: the warehouse keeps "
                       "every batch it loaded, and the next run starts from the last state saved") from None


def _ingest_state() -> IngestState:
    """The ingest state pointer in the emulated bucket ({} before the first run)."""
    from utils.aws.state import read_ingest_state
    return read_ingest_state(boto3.client("s3", region_name=REGION), BUCKETS["INGEST_BUCKET"])[0]


def _summarise(output: Mapping[str, Any], seconds: Dict[str, float], elapsed: float,
               rounds: Sequence[Round] = ()) -> RunSummary:
    """The facts print_summary shows: summed over ``rounds`` (totesys_local.rounds) when the execution
    recorded them, else from the execution's output (its last round). Reads the stage outputs and state
    with ``.get``: their optional keys (rejected rows, ignored columns, time zone) may or may not be there."""
    s3 = boto3.client("s3", region_name=REGION)
    state = _ingest_state()
    if rounds:
        return _summarise_rounds(rounds, state, seconds, elapsed)
    files = (output.get("ingest") or {}).get("files") or {}
    manifest = _latest_ingest_manifest(s3, state)
    entries = (manifest.get("tables") if manifest else None) or {}
    # Row counts come from this run's manifest (the ingest writes one only when a table has rows).
    ingested = {table: entries[table]["rows"] for table in files if table in entries}
    transform_result = (output.get("transform") or {}).get("result") or {}
    load_result = (output.get("load") or {}).get("result") or {}
    return {"ingested": ingested, "loaded": load_result.get("tables") or {},
            "batches": load_result.get("batches") or [],
            "transformed": transform_result.get("batches") or [],
            "rejected_rows": load_result.get("rejected_rows") or 0,
            "rejected": load_result.get("rejected") or {},
            "deleted_rows": load_result.get("deleted_rows") or 0,
            "deleted": load_result.get("deleted") or {},
            "ignored_columns": state.get("ignored_columns") or {},
            "held_deletes": state.get("held_deletes") or {},
            "seconds": seconds, "elapsed": elapsed,
            "bounds": _batch_bounds(manifest)}


def _summarise_rounds(rounds: Sequence[Round], state: IngestState, seconds: Dict[str, float],
                      elapsed: float) -> RunSummary:
    """_summarise over every round of the execution (rows per round and in total)."""
    ingested, loaded, batches, transformed, rejected, deleted = totals(rounds)
    landed = [one.manifest for one in rounds if one.manifest]
    bounds: Optional[Bounds] = None
    if landed:
        every_table = {f"{number}/{table}": entry for number, manifest in enumerate(landed)
                       for table, entry in manifest["tables"].items()}
        bounds = _batch_bounds({"batch_time": landed[-1]["batch_time"],
                                "timezone": landed[-1].get("timezone"), "tables": every_table})
        if bounds is not None and any(not entry.get("low") for entry in every_table.values()):
            bounds = ("beginning of data", *bounds[1:])  # a table's first run read from the start
    return {"ingested": ingested, "loaded": loaded, "batches": batches, "transformed": transformed,
            "rejected_rows": sum(rejected.values()), "rejected": rejected,
            "deleted_rows": sum(deleted.values()), "deleted": deleted,
            "ignored_columns": state.get("ignored_columns") or {},
            "held_deletes": state.get("held_deletes") or {},
            "seconds": seconds, "elapsed": elapsed, "bounds": bounds,
            "rounds": [{"batch_id": (one.manifest or {}).get("batch_id"),
                        "ingested": sum(one.ingested.values()),
                        "loaded": sum((one.load.get("tables") or {}).values())} for one in rounds],
            "more_waiting": bool(state.get("more_waiting"))}


def _latest_ingest_manifest(s3: Any, state: IngestState) -> Optional[IngestManifest]:
    """The manifest of the latest ingest batch with data (named by the ingest state pointer), or None."""
    from utils.aws.manifests import read_ingest_manifest
    key = state.get("manifest_key")
    return read_ingest_manifest(s3, BUCKETS["INGEST_BUCKET"], key) if key else None


def _batch_bounds(manifest: Optional[Mapping[str, Any]]) -> Optional[Bounds]:
    """(low, high, time zone) of a batch: the earliest table lower bound and the latest upper bound,
    in the source's time zone (the batch time, UTC, when the tables carry no upper bound)."""
    if manifest is None:
        return None
    tables = manifest["tables"].values()
    lows = [entry["low"] for entry in tables if entry.get("low")]
    highs = [entry["high"] for entry in tables if entry.get("high")]
    timezone = manifest.get("timezone") or "UTC"
    return (min(lows) if lows else "beginning of data", max(highs) if highs else manifest["batch_time"],
            timezone)


def print_summary(summary: RunSummary, warehouse_line: str, out: Callable[[str], None] = print) -> None:
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
    _print_rounds(summary, out)
    batches = summary.get("batches") or []
    if not ingested and not batches:
        out("\nnothing new: totesys has no changes since the last batch")
    elif not ingested:
        out(f"\nno changes in totesys since the last batch; loaded {len(batches)} pending batch(es): "
            + ", ".join(batches))
    rejected = summary.get("rejected_rows") or 0
    if rejected:
        per_table = ", ".join(f"{table} {rows}" for table, rows in (summary.get("rejected") or {}).items())
        out(f"\n{rejected} rows rejected (quarantined){f' ({per_table})' if per_table else ''}: "
            "see etl_rejected_rows in the warehouse (make psql)")
    deleted = summary.get("deleted_rows") or 0
    if deleted:
        per_table = ", ".join(f"{table} {rows}" for table, rows in (summary.get("deleted") or {}).items())
        out(f"\n{deleted} rows deleted in totesys{f' ({per_table})' if per_table else ''}: gone from the "
            "current views, kept in the fact history; see etl_deleted_rows in the warehouse (make psql)")
    _print_held_deletes(summary, out)
    for table, columns in (summary.get("ignored_columns") or {}).items():
        out(f"columns ignored in {table} (new in the source, not in the pipeline): {', '.join(columns)}")
    per_stage = ", ".join(f"{stage} {secs:.2f}" for stage, secs in summary["seconds"].items())
    rounds = len(summary.get("rounds") or ())
    over = f", summed over {rounds} rounds" if rounds > 1 else ""
    out(f"\nseconds per stage: {per_stage} (execution {summary['elapsed']:.2f} s{over})")
    bounds = summary.get("bounds")
    if bounds:
        low, high, *zone = bounds
        label = "batch bounds" if ingested else "last batch with changes"
        out(f"{label}: from {low} to {high} (source time, {zone[0] if zone else 'UTC'})")
    for warning in summary.get("limit_warnings") or []:
        out(f"warning: {warning}")
    out(f"structured logs: {summary['log']}")
    out(f"warehouse: {warehouse_line}")


def _print_held_deletes(summary: RunSummary, out: Callable[[str], None]) -> None:
    """The deletions the mass-delete guard holds (the ingest state's ``held_deletes``), on every run until
    approved: locally the run's output is the operator's alert (on AWS, DeletionsHeld e-mails)."""
    for table, entry in sorted((summary.get("held_deletes") or {}).items()):
        out(f"\nDELETIONS HELD: {table}: {entry['rows']:,} of {entry['table_rows']:,} rows deleted in "
            "totesys, held by the mass-delete guard (still in the current views; approve: totesys "
            f"deletes --approve {table})")


def _print_rounds(summary: RunSummary, out: Callable[[str], None]) -> None:
    """The rounds of a bounded execution (rows per round; the totals above are over all of them), and
    whether rows still wait in totesys."""
    rounds = summary.get("rounds") or []
    if len(rounds) > 1:
        out(f"\nrounds: {len(rounds)} (batches bounded by MAX_BATCH_ROWS; the totals above are over all "
            "of them)")
        for number, one in enumerate(rounds, 1):
            out(f"  round {number:>2}: batch {one['batch_id'] or '-':<22} {one['ingested']:>10,} rows "
                f"ingested {one['loaded']:>10,} rows loaded")
    if summary.get("more_waiting"):
        out("\nmore rows wait in totesys (the last batch was cut at MAX_BATCH_ROWS): the next run continues; "
            "`totesys pending` shows how many")


# -- commands --------------------------------------------------------------------------------------

def source_and_warehouse(args: Namespace) -> Tuple[Optional[str], Optional[str]]:
    """--source/--warehouse, else TOTESYS_SOURCE_URL/TOTESYS_WAREHOUSE_URL, else None (embedded)."""
    source = getattr(args, "source", None) or os.environ.get("TOTESYS_SOURCE_URL") or None
    warehouse = getattr(args, "warehouse", None) or os.environ.get("TOTESYS_WAREHOUSE_URL") or None
    return source, warehouse


def _check_credentials(url: str, role: str) -> Optional[DatabaseIdentity]:
    """Fail fast, naming the URL without its password, when a database refuses the credentials (or
    the URL is malformed); return the database's identity (``utils.db.identity``). An unreachable
    server is left to the pipeline (None): its stages retry, alert and keep what the earlier stages
    did for `totesys retry`."""
    try:
        conn = connect_to_db(credentials=credentials_from_url(url))
    except DatabaseUnavailableError:
        return None
    except CredentialsError as err:
        raise RunError(f"{role} database {describe_url(url)}: {err}") from None
    try:
        return database_identity(conn)
    finally:
        close_db_connection(conn)


def _run(args: Namespace, state_dir: Path, before: Optional[Callable[[str], None]] = None,
         request: Optional[Mapping[str, Any]] = None) -> RunSummary:
    """Resolve the databases, run one execution and print its summary (the body of run and retry)."""
    # Fail before any work when a development dependency (moto) is missing.
    import totesys_local.aws_emulation  # noqa: F401
    print(f"ToteSys local run (state in {state_dir}/)")
    source, warehouse = source_and_warehouse(args)
    given = {"source": source, "warehouse": warehouse}
    known = {role: _check_credentials(url, role) for role, url in given.items() if url}
    repoint = bool(getattr(args, "repoint", False))
    try:  # the folder's own databases, before the embedded cluster is started or seeded (folder_identity)
        folder_identity.refuse_missing_urls(state_dir, given, repoint)
        source_url, warehouse_url, pg = resolve_databases(source, warehouse, state_dir, print)
        record = folder_identity.check_databases(
            state_dir, {"source": source_url, "warehouse": warehouse_url},
            {"source": not source, "warehouse": not warehouse}, repoint, known, write=False)
    except DatabaseIdentityError as err:
        raise RunError(str(err)) from None
    print(f"  source    {describe_url(source_url)}")
    print(f"  warehouse {describe_url(warehouse_url)}")
    if before is not None:
        before(warehouse_url)
    if repoint:
        request = dict(request or {}, repoint_source=True)
    try:
        summary = run_pipeline(source_url, warehouse_url, state_dir, request=request)
    finally:
        # The folder is tied to its databases once it holds an ingest state from them (a first run that
        # fails before landing anything, e.g. with swapped URLs, leaves the folder free).
        if (Path(state_dir) / "s3" / BUCKETS["INGEST_BUCKET"] / "_state" / "ingest.json").exists():
            folder_identity.write_record(state_dir, record)
    if pg is not None and not warehouse:
        line = (f"PGPASSFILE={state_dir / 'pgpass'} psql -h {pg.info.host} -p {pg.info.port} "
                f"-U {pg.info.user} {WAREHOUSE_DB}   (or: make psql)")
    else:
        line = f'psql "{describe_url(warehouse_url)}"'
    print_summary(summary, line)
    return summary


def _command_run(args: Namespace, state_dir: Path) -> int:
    _run(args, state_dir)
    return 0


def _command_retry(args: Namespace, state_dir: Path) -> int:
    """Run again: first say what is pending (and the last failure), then what was retried. Exit 1
    when batches still wait afterwards (the execution did not process them)."""
    warehouse_urls: List[str] = []

    def announce(warehouse_url: str) -> None:
        warehouse_urls.append(warehouse_url)
        found = pending_batches.find_pending(state_dir, warehouse_url)
        if found.is_empty() and not found.last_error:
            print("nothing pending and no failed run: running a normal execution")
        else:
            print("retrying:")
            pending_batches.print_pending(found, print, indent="  ")

    summary = _run(args, state_dir, before=announce)
    transformed, loaded = summary.get("transformed") or [], summary.get("batches") or []
    print(f"\nretried: {len(transformed)} batch(es) transformed"
          f"{' (' + ', '.join(transformed) + ')' if transformed else ''}, {len(loaded)} batch(es) loaded"
          f"{' (' + ', '.join(loaded) + ')' if loaded else ''}")
    after = pending_batches.find_pending(state_dir, warehouse_urls[0])
    if after.ingest or after.processed:
        print(f"totesys retry: still pending after the execution: {len(after.ingest)} ingest batch(es) not "
              f"transformed, {len(after.processed)} processed batch(es) not loaded; `totesys pending` "
              "lists them", file=sys.stderr)
        return 1
    return 0


def _command_pending(args: Namespace, state_dir: Path) -> int:
    source, warehouse = source_and_warehouse(args)
    if warehouse is None and (state_dir / "cluster.json").exists():
        pg = local_pg.local_cluster(state_dir)
        # as `run` resolves them: a database not given is the embedded one
        source = pg.url(SOURCE_DB) if source is None else source
        warehouse = pg.url(WAREHOUSE_DB)
    pending_batches.print_pending(pending_batches.find_pending(state_dir, warehouse, source), print)
    return 0


def _command_stop(args: Namespace, state_dir: Path) -> int:
    from totesys_local.daemon.client import stop as stop_emulator
    emulator = stop_emulator(state_dir)
    if emulator is not None:
        print(f"local emulator stopped (pid {emulator})")
    was_running = local_pg.stop_local_cluster(state_dir)
    print("embedded PostgreSQL stopped" if was_running else "embedded PostgreSQL was not running")
    return 0


def _command_psql(args: Namespace, state_dir: Path) -> int:
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
    argv = [psql, "-h", pg.info.host, "-p", str(pg.info.port), "-U", pg.info.user, WAREHOUSE_DB]
    os.execvpe(psql, argv, env)  # nosec B606 - the user asked for psql
    return 0  # pragma: no cover - execvpe does not return


# Commands that run the pipeline hold the state folder's lock for the whole run.
COMMANDS = {"run": (_command_run, True), "retry": (_command_retry, True),
            "pending": (_command_pending, False), "psql": (_command_psql, False),
            "stop": (_command_stop, False)}


def run_with_request(args: Namespace, request: Mapping[str, Any]) -> int:
    """One execution with ``request`` as its input (`totesys resync`, `totesys deletes --approve`), under
    the state folder's run lock, as `totesys run`; the exit status."""
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _exclusive(state_dir):
            _run(args, state_dir, request=request)
            return 0
    except RunError as err:
        print(f"totesys {args.command}: FAILED: {err}", file=sys.stderr)
        return 1


def main(args: Namespace) -> int:
    """Entry point for ``totesys run|retry|pending|psql|stop`` (called by totesys_local.cli)."""
    state_dir = Path(args.state_dir)
    command, exclusive = COMMANDS[args.command]
    if not exclusive:
        return command(args, state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _exclusive(state_dir):
            return command(args, state_dir)
    except RunError as err:
        print(f"totesys {args.command}: FAILED: {err}", file=sys.stderr)
        return 1
