"""Runs of the real pipeline for the model: ``totesys run``'s own ``runner.run_pipeline`` (the real state
machine in moto's engine, the real handlers in-process, the state folder saved after every execution),
with faults injected the way the existing kill tests inject them.

Kill points (``KILL_POINTS``), each at the n-th time the run reaches it:

* ``s3_write``: the n-th object a stage writes (ingest and transform data files, key sets, manifests,
  state pointers: every write and every commit point of those two stages); the stage dies there;
* ``load_before_commit``: the load dies inside a batch's transaction, after its ledger row;
* ``load_after_commit``: the load dies right after a batch's COMMIT, before it reports anything;
* ``local_save``: the whole local run dies while saving the buckets to the state folder (``Killed``
  is a BaseException: nothing after it runs, as with SIGKILL);
* ``slot_advance`` (INGEST_MODE=cdc, ``CDC_KILL_POINTS``): the ingest dies as it advances the replication
  slot, after the batch's manifest and state pointer are written (or, on the run after such a death, as
  it catches the slot up with the state pointer).

A stage that dies raises ``StageKilled``: the state machine does not retry it, the execution fails and
alerts, as a Lambda killed mid-way leaves things (what it wrote stays in S3; its transaction is rolled
back when its connection goes).
"""
import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import boto3
import botocore.client

from totesys_local import local_state, runner
from totesys_local.cluster import free_port

KILL_POINTS = ("s3_write", "load_before_commit", "load_after_commit", "local_save")
CDC_KILL_POINTS = ("slot_advance",)


class Killed(BaseException):
    """Stands for SIGKILL of the local run: nothing after it runs."""


class StageKilled(Exception):
    """A stage's Lambda died at an injected kill point."""


class KillPlan:
    """Die at the ``nth`` arrival at ``point``; ``fired`` says whether it did."""

    def __init__(self, point, nth):
        assert point in KILL_POINTS + CDC_KILL_POINTS, point
        self.point, self.nth = point, nth
        self.arrivals = 0
        self.fired = False

    def arrive(self, point):
        """Count an arrival at ``point``; True when this one must die."""
        if point != self.point or self.fired:
            return False
        self.arrivals += 1
        if self.arrivals == self.nth:
            self.fired = True
            return True
        return False


_active = {"stage": None}


def _wrapped_handlers(real_handlers):
    real = real_handlers("totesys")

    def wrap(name, handler):
        def run_stage(event, context):
            _active["stage"] = name
            try:
                return handler(event, context)
            finally:
                _active["stage"] = None
        return run_stage

    return {name: wrap(name, handler) for name, handler in real.items()}


def tracked_handlers():
    """The real handlers, each telling the fault hooks which stage runs (``_active``)."""
    return _wrapped_handlers(runner.stage_handlers)


@contextmanager
def kept_account():
    """One emulated account with the pipeline deployed for every run inside (as the local emulator
    keeps one): each run then skips moto's start and the deployment. Runs clear it before and after."""
    from totesys_local.aws_emulation import account_environment, kept_pipeline
    # TOTESYS_RETRY_TIME_SCALE=0: the state machine's Retry waits cost no real time (as in the suite).
    with environment(**account_environment(local_state.REGION, **local_state.BUCKETS, **runner.SECRETS),
                     TOTESYS_RETRY_TIME_SCALE="0"), \
            kept_pipeline(tracked_handlers()):
        yield


@contextmanager
def faults(plan):
    """Inject ``plan`` (None: no fault) into the next run(s)."""
    from utils.ingest.cdc import run as cdc_run
    from utils.load import merge
    from utils.load import run as load_run
    if plan is None:
        yield
        return
    real_advance = cdc_run.advance_slot
    real_call = botocore.client.BaseClient._make_api_call
    real_record, real_load_batch = merge.record_batch, load_run.load_batch
    real_write = local_state.write_atomically
    real_handlers = runner.stage_handlers

    def make_api_call(client, operation, params):
        if operation == "PutObject" and _active["stage"] and plan.arrive("s3_write"):
            raise StageKilled(f"killed before writing {params.get('Key')} ({_active['stage']})")
        return real_call(client, operation, params)

    def record_batch(*args, **kwargs):
        real_record(*args, **kwargs)
        if plan.arrive("load_before_commit"):
            raise StageKilled("killed before the batch's COMMIT")

    def load_batch(*args, **kwargs):
        counts = real_load_batch(*args, **kwargs)
        if plan.arrive("load_after_commit"):
            raise StageKilled("killed right after the batch's COMMIT")
        return counts

    def advance_slot(*args, **kwargs):
        if plan.arrive("slot_advance"):
            raise StageKilled("killed before the replication slot advanced")
        return real_advance(*args, **kwargs)

    def write_atomically(path, body):
        if plan.arrive("local_save"):
            raise Killed(f"killed while saving {path}")
        return real_write(path, body)

    with mock.patch.object(botocore.client.BaseClient, "_make_api_call", make_api_call), \
            mock.patch.object(merge, "record_batch", record_batch), \
            mock.patch.object(load_run, "load_batch", load_batch), \
            mock.patch.object(cdc_run, "advance_slot", advance_slot), \
            mock.patch.object(local_state, "write_atomically", write_atomically), \
            mock.patch.object(runner, "stage_handlers", lambda prefix: _wrapped_handlers(real_handlers)):
        yield


@contextmanager
def environment(**variables):
    """Settings the handlers read from the environment, for one run."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update({key: str(value) for key, value in variables.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet(*_):
    """The runner's progress lines are not wanted here."""


def run(source_url, warehouse_url, state_dir, plan=None, **settings):
    """One ``totesys run`` execution; returns ("succeeded", summary), ("failed", message) or
    ("killed", message) (the local run died while saving)."""
    try:
        with faults(plan), environment(**settings):
            summary = runner.run_pipeline(source_url, warehouse_url, state_dir, out=quiet)
    except runner.RunError as err:
        return "failed", str(err)
    except Killed as err:
        return "killed", str(err)
    return "succeeded", summary


def dead_warehouse_url(warehouse_url):
    """The warehouse's URL on a port nobody listens on (the warehouse is down)."""
    from utils.db.connection import credentials_from_url
    parts = credentials_from_url(warehouse_url)
    return f"postgresql://{parts['user']}:{parts['password']}@127.0.0.1:{free_port()}/{parts['database']}"


def run_two_at_once(source_url, warehouse_url, state_dir, delay, **settings):
    """Two executions of the deployed state machine started ``delay`` seconds apart in one emulated
    account (the schedule and a manual start), the buckets restored from and saved to the state folder
    as ``totesys run`` does, with the handlers' ``settings``; returns the two statuses."""
    from totesys_local.aws_emulation import (account_environment, pipeline_account, put_credentials_secret,
                                             wait_for_execution)
    from totesys_local.lazy_s3 import lazy_buckets
    state_dir = Path(state_dir)
    s3_dir = state_dir / "s3"
    log = state_dir / "logs" / f"two-{uuid.uuid4().hex[:6]}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = account_environment(local_state.REGION, TOTESYS_LOG_FILE=str(log), **local_state.BUCKETS,
                              **runner.SECRETS, **settings)
    with runner.applied_environment(env):
        with pipeline_account(runner.stage_handlers("totesys"), "totesys") as arns, lazy_buckets(s3_dir):
            put_credentials_secret(runner.SECRETS["TOTESYS_SECRET_ID"], source_url)
            put_credentials_secret(runner.SECRETS["WAREHOUSE_SECRET_ID"], warehouse_url)
            sfn = boto3.client("stepfunctions", region_name=local_state.REGION)
            started = []
            for number in range(2):
                if number:
                    time.sleep(delay)
                started.append(sfn.start_execution(stateMachineArn=arns["state_machine_arn"], input="{}",
                                                   name=f"model-{uuid.uuid4().hex[:10]}")["executionArn"])
            try:
                return [wait_for_execution(arn)["status"] for arn in started]
            finally:
                local_state.save_buckets(s3_dir)


def more_waiting(state_dir):
    """True when the ingest state pointer in the state folder says a cut batch left rows waiting."""
    import json
    path = Path(state_dir) / "s3" / local_state.BUCKETS["INGEST_BUCKET"] / "_state" / "ingest.json"
    return path.exists() and bool(json.loads(path.read_text()).get("more_waiting"))


def cdc_pointer(state_dir):
    """The ingest state pointer's ``cdc`` entry in the state folder (None: no pointer, or a cursor run's)."""
    import json
    path = Path(state_dir) / "s3" / local_state.BUCKETS["INGEST_BUCKET"] / "_state" / "ingest.json"
    return json.loads(path.read_text()).get("cdc") if path.exists() else None


def recorded_zone(state_dir):
    """The source zone the ingest state pointer in the state folder recorded (None: no pointer yet)."""
    import json
    path = Path(state_dir) / "s3" / local_state.BUCKETS["INGEST_BUCKET"] / "_state" / "ingest.json"
    return json.loads(path.read_text()).get("timezone") if path.exists() else None


def ingest_summary(state_dir, last=6):
    """What the ingest recorded, for a failure message: the state pointer's zone and per-table bounds,
    and the last ``last`` manifests' (batch time, zone, {table: (low, high, rows)})."""
    import json
    bucket = Path(state_dir) / "s3" / local_state.BUCKETS["INGEST_BUCKET"]
    pointer = bucket / "_state" / "ingest.json"
    if not pointer.exists():
        return "no ingest state pointer"
    state = json.loads(pointer.read_text())
    lines = [f"ingest state: zone {state.get('timezone')}, more_waiting {state.get('more_waiting')}, "
             f"cdc {state.get('cdc')}, highs "
             + ", ".join(f"{t} {e.get('high')}" for t, e in sorted(state.get("tables", {}).items()))]
    key, chain = state.get("manifest_key"), []
    while key and len(chain) < last and (bucket / key).exists():
        manifest = json.loads((bucket / key).read_text())
        chain.append(manifest)
        key = manifest.get("prev_manifest_key")
    for manifest in chain:
        tables = ", ".join(f"{t} [{e.get('low')}, {e.get('high')}) {e.get('rows')}"
                           for t, e in sorted(manifest.get("tables", {}).items()))
        lines.append(f"batch {manifest.get('batch_time')} zone {manifest.get('timezone')}: {tables}")
    return "\n    ".join(lines)
