"""What the handlers' common path (utils.logger.stage_handler) does around every stage: the log level of
a failure (ERROR for a retryable one, CRITICAL for the rest: the CRITICAL metric counts real failures),
and the start-up check of the AWS SDK (utils.aws.sdk)."""
import gzip
import json
import logging
import re
from pathlib import Path

import botocore
import pytest

import ingest
from utils.aws import sdk
from utils.errors import (ConcurrentRunError, ConfigError, CredentialsError, DatabaseUnavailableError,
                          RetryableError, StateConflictError, StorageThrottledError, TlsError)
from utils.logger import stage_handler

ROOT = Path(__file__).resolve().parents[2]
RETRYABLE = (DatabaseUnavailableError, ConcurrentRunError, StorageThrottledError, StateConflictError)


@pytest.fixture
def stage_log(tmp_path, monkeypatch):
    """A handler of a fresh service logging to a file; returns (handler factory, read records)."""
    path = tmp_path / "log.jsonl"
    monkeypatch.setenv("TOTESYS_LOG_FILE", str(path))
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"a{tmp_path.name}")

    def failing(error):
        @stage_handler("load")
        def handler(event, context):
            raise error
        return handler

    def records():
        for handler_ in logging.getLogger(f"a{tmp_path.name}-load").handlers:
            handler_.flush()
        return [json.loads(line) for line in path.read_text().splitlines()]
    return failing, records


def _failure_lines(records):
    return [(r["level"], r["error_type"], r["retryable"]) for r in records if "error_type" in r]


@pytest.mark.parametrize("error_class", RETRYABLE)
def test_a_retryable_failure_is_logged_once_at_error_never_critical(stage_log, error_class):
    failing, records = stage_log
    with pytest.raises(error_class):
        failing(error_class("transient"))({}, None)
    assert _failure_lines(records()) == [("ERROR", error_class.__name__, True)]
    assert not [r for r in records() if r["level"] == "CRITICAL"]


@pytest.mark.parametrize("error", [ValueError("bad batch"), CredentialsError("no key"), TlsError("bad cert"),
                                   ConfigError("unset")])
def test_a_failure_no_retry_mends_is_logged_once_at_critical(stage_log, error):
    failing, records = stage_log
    with pytest.raises(type(error)):
        failing(error)({}, None)
    assert _failure_lines(records()) == [("CRITICAL", type(error).__name__, False)]


def test_every_retryable_error_is_retried_by_the_state_machine_by_name():
    definition = json.loads((ROOT / "state_machine" / "pipeline.asl.json").read_text())
    retried = {name for state in definition["States"].values() for retry in state.get("Retry", [])
               for name in retry["ErrorEquals"]}
    assert {cls.__name__ for cls in RETRYABLE} <= retried
    assert all(issubclass(cls, RetryableError) for cls in RETRYABLE)
    assert not issubclass(TlsError, RetryableError)


# -- the AWS SDK the code was tested with ----------------------------------------------------------------

@pytest.fixture
def fresh_sdk_check():
    sdk.sdk_problem.cache_clear()
    yield
    sdk.sdk_problem.cache_clear()


@pytest.fixture
def botocore_without_if_match(tmp_path, monkeypatch, fresh_sdk_check):
    """botocore's own S3 model minus put_object's IfMatch, found first through AWS_DATA_PATH (botocore's
    documented search path for models): what an older botocore knows."""
    source = Path(botocore.__file__).parent / "data" / "s3" / "2006-03-01"
    model = json.loads(gzip.decompress((source / "service-2.json.gz").read_bytes()))
    del model["shapes"]["PutObjectRequest"]["members"]["IfMatch"]
    target = tmp_path / "models" / "s3" / "2006-03-01"
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path / "models"))


def test_the_installed_botocore_passes_the_check(fresh_sdk_check):
    assert sdk.sdk_problem() is None
    sdk.require_tested_sdk()


def test_the_tested_version_is_the_one_the_layer_pins():
    pins = dict(line.split("==") for line in (ROOT / "layers" / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["botocore"] == sdk.TESTED_BOTOCORE_VERSION == botocore.__version__


def test_a_botocore_without_put_object_if_match_is_refused_clearly(botocore_without_if_match):
    with pytest.raises(ConfigError) as raised:
        sdk.require_tested_sdk()
    assert str(raised.value) == (
        f"botocore {botocore.__version__} cannot run this pipeline: its S3 put_object has no IfMatch "
        "parameter, which the state pointers' compare-and-swap needs (a late-2024 botocore or newer). The "
        "own Lambda layer ships botocore 1.44.8, the version tested: run `make layer` and deploy it after "
        "the managed pandas layer")


def test_a_handler_on_an_sdk_without_if_match_fails_at_once_with_a_critical_line(
        botocore_without_if_match, tmp_path, monkeypatch):
    """Before the check, ingest would read the source and land files, then fail writing the state pointer."""
    path = tmp_path / "ingest.jsonl"
    monkeypatch.setenv("TOTESYS_LOG_FILE", str(path))
    for name in ("INGEST_BUCKET", "PROCESSED_BUCKET", "TOTESYS_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)  # the check comes before settings are read
    with pytest.raises(ConfigError, match=re.escape("its S3 put_object has no IfMatch parameter")):
        ingest.lambda_handler({}, None)
    records = [json.loads(line) for line in path.read_text().splitlines() if '"level"' in line]
    assert [(r["level"], r.get("error_type")) for r in records if r["level"] != "INFO"] == [
        ("CRITICAL", "ConfigError")]
