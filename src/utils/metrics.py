"""The one metrics set-up: CloudWatch embedded metric format (EMF) lines, namespace ``ToteSys``.

EMF is a log format: CloudWatch turns these JSON lines into metrics, so the functions need no extra
IAM permission. Every metric carries the dimensions ``service`` (``totesys``) and ``stage``:

| metric | unit | when |
|---|---|---|
| ``StageDuration`` | Milliseconds | every invocation, success or failure |
| ``Failures`` | Count | every invocation: 1 when the stage raised, else 0 |
| ``BatchLag`` | Seconds | now minus the upper bound (batch time, UTC) of the newest batch handled |
| ``Rows`` | Count | rows of the batches the stage handled, all tables together |
| ``Rows`` (+ dimension ``table``) | Count | the same per table, with ``TOTESYS_PER_TABLE_METRICS=true`` |
| ``RejectedRows``, ``DeletedRows`` | Count | load, when its output has ``rejected_rows``, ``deleted_rows`` |

and one metric with the dimension ``service`` only, the freshness the alarm watches:

``WarehouseLag`` (Seconds): the load stage emits now minus the newest batch it loaded, or 0 when it
found nothing pending (transform and load run on every execution after ingest, so a load with nothing
pending means everything up to this execution's ingest snapshot is in the warehouse). A pipeline that
stops running or keeps failing emits none, which the alarm treats as breaching.

Each metric with its own dimension values is a custom metric CloudWatch bills monthly: the per-table
``Rows`` alone are ~33 of them (11 tables x 3 stages), so they are off unless the Terraform variable
``per_table_row_metrics`` turns them on (it sets ``TOTESYS_PER_TABLE_METRICS``).

Metrics are flushed when the handler ends, also when it raises. Locally
the runner sets ``TOTESYS_LOG_FILE``: the EMF lines go to that file beside the log lines, so the
output of ``make run`` stays readable.
"""
from typing import Any, Callable, Dict, Mapping, Optional
import functools
import json
import logging
import os
import re
import time
from datetime import datetime, timezone

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from utils.errors import ConfigError
from utils.logger import write_line

NAMESPACE = "ToteSys"
SERVICE = "totesys"

metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

# Counts the load output carries when the load has them: output key -> metric name.
OPTIONAL_LOAD_COUNTS = {"rejected_rows": "RejectedRows", "deleted_rows": "DeletedRows"}

_log = logging.getLogger(__name__)
_SWITCH = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
           "off": False, "": False}
_KEY_TIME = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{12})\.parquet$")


def batch_time_from_id(batch_id: str) -> datetime:
    """The batch time (upper bound, aware UTC datetime) of a ``batch_id`` like '20241126T101500123456'.

    Raises ValueError for anything else."""
    return datetime.strptime(batch_id, "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)


def batch_time_from_key(file_key: str) -> datetime:
    """The batch time (aware UTC datetime) of a landing key ``table/yyyy/mm/dd/hhmmssffffff.parquet``.

    Raises ValueError when the key does not follow the scheme."""
    match = _KEY_TIME.search(file_key)
    if not match:
        raise ValueError(f"not a batch file key: {file_key!r}")
    year, month, day, clock = match.groups()
    return datetime.strptime(f"{year}{month}{day}{clock}", "%Y%m%d%H%M%S%f").replace(tzinfo=timezone.utc)


def ingest_rows(result: Mapping[str, str], s3_client: Any = None) -> Dict[str, int]:
    """Rows per source table of the batch an ingest ``result`` ({table: file_key}) landed, read from
    its manifest (``_batches/<batch time>.json`` in the ingest bucket); {} when nothing landed."""
    if not result:
        return {}
    import boto3

    from utils.config import load_settings
    from utils.aws.layout import INGEST_MANIFESTS
    from utils.generate_file_key import generate_file_key
    from utils.aws.manifests import read_ingest_manifest
    batch_time = max(batch_time_from_key(key) for key in result.values())
    key = generate_file_key(INGEST_MANIFESTS, batch_time.replace(tzinfo=None), "json")
    manifest = read_ingest_manifest(s3_client or boto3.client("s3"), load_settings().ingest_bucket, key,
                                    required="batch_id")
    return {table: int(entry.get("rows", 0)) for table, entry in manifest["tables"].items()}


def per_table_rows(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``Rows`` is also emitted per table: ``TOTESYS_PER_TABLE_METRICS`` (true/false, 1/0,
    yes/no, on/off; unset = false). Raises ConfigError for anything else."""
    environ = os.environ if environ is None else environ
    text = environ.get("TOTESYS_PER_TABLE_METRICS", "")
    if text.strip().lower() not in _SWITCH:
        raise ConfigError(f"TOTESYS_PER_TABLE_METRICS must be true or false, got {text!r}")
    return _SWITCH[text.strip().lower()]


def emit(payload: Mapping[str, Any]) -> None:
    """Write one EMF object as a line: to stdout (CloudWatch Logs in Lambda), or appended to the file
    TOTESYS_LOG_FILE names when it is set (the local runner). Never swaps sys.stdout: locally the
    stages run on another thread while the runner prints its progress."""
    if is_metrics_disabled():
        return
    write_line(json.dumps(payload, separators=(",", ":")) + "\n")


def _single(name: str, unit: Any, value: float, dimensions: Mapping[str, str]) -> None:
    """One EMF line holding one metric with exactly ``dimensions`` (its own metric set, so it never mixes
    with the stage's)."""
    provider = AmazonCloudWatchEMFProvider(metric_set={}, dimension_set={}, metadata_set={},
                                           namespace=NAMESPACE)
    for key, text in dimensions.items():
        provider.add_dimension(name=key, value=text)
    provider.add_metric(name=name, unit=unit, value=value)
    emit(provider.serialize_metric_set())


def _per_stage(name: str, unit: Any, value: float, stage: str, **dimensions: str) -> None:
    """One EMF line for a metric with the stage's dimensions plus ``dimensions`` (e.g. table)."""
    _single(name, unit, value, {"service": SERVICE, "stage": stage, **dimensions})


def _warehouse_lag(seconds: float) -> None:
    _single("WarehouseLag", MetricUnit.Seconds, seconds, {"service": SERVICE})


def record_result(stage: str, result: Any, now: Optional[datetime] = None, s3_client: Any = None) -> None:
    """Emit the metrics a successful stage's ``result`` carries (rows, lag, rejected/deleted rows)."""
    now = now or datetime.now(timezone.utc)
    if stage == "ingest":
        rows = ingest_rows(result, s3_client)
        newest = max((batch_time_from_key(key) for key in result.values()), default=None)
    else:
        rows = result.get("tables") or {}
        batches = result.get("batches") or []
        newest = max((batch_time_from_id(batch_id) for batch_id in batches), default=None)
    metrics.add_metric(name="Rows", unit=MetricUnit.Count, value=sum(rows.values()))
    if per_table_rows():
        for table, count in rows.items():
            _per_stage("Rows", MetricUnit.Count, count, stage, table=table)
    if newest is not None:
        lag = max((now - newest).total_seconds(), 0.0)
        metrics.add_metric(name="BatchLag", unit=MetricUnit.Seconds, value=lag)
        if stage == "load":
            _warehouse_lag(lag)
    elif stage == "load":
        _warehouse_lag(0)
    for key, name in OPTIONAL_LOAD_COUNTS.items():
        if stage == "load" and isinstance(result.get(key), int):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=result[key])


def stage_metrics(stage: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Lambda handler of ``stage`` ('ingest', 'transform', 'load'): emit its metrics and
    flush them when it ends, also when it raises (the exception propagates unchanged). A metric that
    cannot be worked out after the stage succeeded is logged as a warning, never turned into a stage
    failure: the batch is already committed. The EMF lines are written by ``emit``: sys.stdout is never
    swapped (the local runner prints its progress from another thread meanwhile)."""
    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def wrapper(event: Any, context: Any) -> Any:
            metrics.add_dimension(name="stage", value=stage)
            started = time.perf_counter()
            failed = True
            try:
                result = handler(event, context)
                failed = False
                return result
            finally:
                try:
                    metrics.add_metric(name="Failures", unit=MetricUnit.Count, value=1 if failed else 0)
                    metrics.add_metric(name="StageDuration", unit=MetricUnit.Milliseconds,
                                       value=round((time.perf_counter() - started) * 1000, 1))
                    if not failed:
                        try:
                            record_result(stage, result if isinstance(result, dict) else {})
                        except Exception as err:  # noqa: BLE001 - see the docstring
                            _log.warning("%s metrics incomplete: %s: %s", stage, type(err).__name__, err)
                    emit(metrics.serialize_metric_set())
                finally:
                    metrics.clear_metrics()
        return wrapper
    return decorate
