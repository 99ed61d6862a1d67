"""The state machine definition, checked as written and executed for real in moto's Step Functions engine,
with the project's real handlers dispatched in-process against real PostgreSQL databases."""
import json
import re
import uuid

import boto3
import pytest

from totesys_local.aws_emulation import (ASL_TEMPLATE, deploy_pipeline, emulated_aws, published_alerts,
                                         render_definition, wait_for_execution)
from tests.dbutil import run_sql
from utils.db_connections import credentials_from_url

DEFINITION = json.loads(ASL_TEMPLATE.read_text())
TASKS = {name: state for name, state in DEFINITION["States"].items() if state["Type"] == "Task"}
STAGES = ("Ingest", "Transform", "Load")


def test_placeholders_are_exactly_the_documented_four():
    found = set(re.findall(r"\$\{(\w+)\}", ASL_TEMPLATE.read_text()))
    assert found == {"ingest_function_arn", "transform_function_arn", "load_function_arn", "alert_topic_arn"}


def test_render_refuses_a_missing_placeholder():
    with pytest.raises(ValueError, match="placeholder"):
        render_definition({"ingest_function_arn": "x"})


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_retries_with_jitter_and_catches_everything(stage):
    state = TASKS[stage]
    assert state["Resource"] == "arn:aws:states:::lambda:invoke"
    transient = [r for r in state["Retry"] if "Lambda.ServiceException" in r["ErrorEquals"]]
    assert transient and transient[0]["JitterStrategy"] == "FULL" and transient[0]["BackoffRate"] > 1
    assert all(r["JitterStrategy"] == "FULL" for r in state["Retry"])
    assert "StorageThrottledError" in {e for r in state["Retry"] for e in r["ErrorEquals"]}
    catch = state["Catch"][0]
    assert catch["ErrorEquals"] == ["States.ALL"]
    handler = DEFINITION["States"][catch["Next"]]
    assert handler["Type"] == "Pass" and handler["Parameters"]["stage"] == stage.lower()
    notify = DEFINITION["States"][handler["Next"]]
    assert notify["Resource"] == "arn:aws:states:::sns:publish"
    assert DEFINITION["States"][notify["Next"]]["Type"] == "Fail"


def test_database_stages_retry_a_lost_connection():
    for stage in ("Ingest", "Load"):
        errors = {e for r in TASKS[stage]["Retry"] for e in r["ErrorEquals"]}
        assert "DatabaseUnavailableError" in errors


# -- executed in moto's engine -----------------------------------------------------------------------

def _handlers():
    import ingest
    import load
    import transform
    return {"totesys-ingest": ingest.lambda_handler, "totesys-transform": transform.lambda_handler,
            "totesys-load": load.lambda_handler}


def _put_secret(name, url, **override):
    creds = dict(credentials_from_url(url), **override)
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(creds))


def _count(url, table):
    return run_sql(url, f"SELECT count(*) FROM {table}")[0][0]  # nosec B608 - fixed test table names


@pytest.fixture
def engine(aws_env, monkeypatch, totesys_url, warehouse_url):
    """The deployed pipeline in moto, wired to real databases; yields a runner."""
    for key, value in {"INGEST_BUCKET": "sm-ingest", "PROCESSED_BUCKET": "sm-processed",
                       "TOTESYS_SECRET_ID": "sm/totesys", "WAREHOUSE_SECRET_ID": "sm/warehouse"}.items():
        monkeypatch.setenv(key, value)
    with emulated_aws(_handlers()) as invocations:
        s3 = boto3.client("s3")
        for bucket in ("sm-ingest", "sm-processed"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        arns = deploy_pipeline("totesys")

        def run(payload="{}"):
            invocations.clear()
            sfn = boto3.client("stepfunctions")
            execution = sfn.start_execution(stateMachineArn=arns["state_machine_arn"], input=payload,
                                            name=f"test-{uuid.uuid4().hex[:12]}")
            return wait_for_execution(execution["executionArn"], timeout=300)

        yield {"run": run, "arns": arns, "invocations": invocations, "source": totesys_url,
               "warehouse": warehouse_url}


def test_end_to_end_success_then_empty_batch_short_circuits(engine):
    _put_secret("sm/totesys", engine["source"])
    _put_secret("sm/warehouse", engine["warehouse"])
    first = engine["run"]()
    assert first["status"] == "SUCCEEDED", first
    assert engine["invocations"] == ["totesys-ingest", "totesys-transform", "totesys-load"]
    output = json.loads(first["output"])
    assert set(output["ingest"]["files"]) >= {"sales_order", "payment", "address"}
    assert _count(engine["warehouse"], "fact_sales_order") == _count(engine["source"], "sales_order")

    second = engine["run"]()
    assert second["status"] == "SUCCEEDED"
    assert engine["invocations"] == ["totesys-ingest"]  # no changes: transform and load never ran
    assert json.loads(second["output"])["ingest"]["files"] == {}
    assert published_alerts(engine["arns"]["alert_topic_arn"]) == []


def test_stage_failure_is_retried_then_alerted_and_the_execution_fails(engine):
    from totesys_local.cluster import free_port
    _put_secret("sm/totesys", engine["source"])
    # The warehouse is unreachable: load raises DatabaseUnavailableError, a retryable error.
    _put_secret("sm/warehouse", engine["warehouse"], port=free_port(), password="pw-never-shown")
    result = engine["run"]()
    assert result["status"] == "FAILED"
    assert result["error"] == "PipelineFailed"
    load_retry = next(r for r in TASKS["Load"]["Retry"] if "DatabaseUnavailableError" in r["ErrorEquals"])
    assert engine["invocations"].count("totesys-load") == 1 + load_retry["MaxAttempts"]
    alerts = published_alerts(engine["arns"]["alert_topic_arn"])
    assert len(alerts) == 1
    message = alerts[0]["message"]
    assert "stage load" in message and "DatabaseUnavailableError" in message
    assert "execution" in message.lower()
    assert "pw-never-shown" not in message
    assert alerts[0]["subject"] == "ToteSys pipeline failed"


def test_non_retryable_failure_alerts_without_retrying(engine):
    _put_secret("sm/totesys", engine["source"])
    _put_secret("sm/warehouse", engine["warehouse"])
    result = engine["run"](json.dumps({"tables_to_query": ["address; DROP TABLE staff"]}))
    assert result["status"] == "FAILED"
    assert engine["invocations"] == ["totesys-ingest"]
    message = published_alerts(engine["arns"]["alert_topic_arn"])[0]["message"]
    assert "stage ingest" in message and "UnknownTableError" in message
