"""The state machine definition, checked as written and executed for real in moto's Step Functions engine,
with the project's real handlers dispatched in-process against real PostgreSQL databases."""
import json
import re
import uuid

import boto3
import pytest

from totesys_local.aws_emulation import (ASL_TEMPLATE, deploy_pipeline, emulated_aws, published_alerts,
                                         create_buckets, put_credentials_secret,
                                         render_definition, wait_for_execution)
from tests.support.db import run_sql

# Several seconds each (the state machine, a local run or a generated warehouse): not in make test-fast.
pytestmark = pytest.mark.slow

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


def test_transform_and_load_follow_ingest_unconditionally():
    states = DEFINITION["States"]
    assert states["Ingest"]["Next"] == "Transform" and states["Transform"]["Next"] == "Load"
    assert not [name for name, state in states.items() if state["Type"] == "Choice"
                and "$.ingest" in json.dumps(state)], "nothing may skip transform/load on the ingest output"


def test_the_data_quality_choice_checks_presence_before_comparing():
    choice = DEFINITION["States"][DEFINITION["States"]["Load"]["Next"]]
    assert choice["Type"] == "Choice" and choice["Default"] == "Done"
    first, second = choice["Choices"]
    assert first["Not"] == {"Variable": "$.load.result.rejected_rows", "IsPresent": True}
    prepare = DEFINITION["States"][second["Next"]]
    assert prepare["Type"] == "Pass" and prepare["Parameters"] == {"sql_quote": "'"}
    notify = DEFINITION["States"][prepare["Next"]]
    assert notify["Resource"] == "arn:aws:states:::sns:publish"
    assert notify["Parameters"]["TopicArn"] == "${alert_topic_arn}"
    assert notify["Next"] == "Done" and notify["Catch"][0]["Next"] == "DataQualityAlertFailed"


# -- executed in moto's engine -----------------------------------------------------------------------

def _handlers():
    import ingest
    import load
    import transform
    return {"totesys-ingest": ingest.lambda_handler, "totesys-transform": transform.lambda_handler,
            "totesys-load": load.lambda_handler}


def _count(url, table):
    return run_sql(url, f"SELECT count(*) FROM {table}")[0][0]  # nosec B608 - fixed test table names


def _engine(monkeypatch, totesys_url, warehouse_url, handlers):
    """The deployed pipeline in moto, wired to real databases; yields a runner.

    One moto context serves every execution of a test, so the buckets keep their objects across
    failed executions, as S3 does."""
    for key, value in {"INGEST_BUCKET": "sm-ingest", "PROCESSED_BUCKET": "sm-processed",
                       "TOTESYS_SECRET_ID": "sm/totesys", "WAREHOUSE_SECRET_ID": "sm/warehouse"}.items():
        monkeypatch.setenv(key, value)
    with emulated_aws(handlers) as invocations:
        create_buckets(("sm-ingest", "sm-processed"))
        arns = deploy_pipeline("totesys")

        def run(payload="{}"):
            invocations.clear()
            sfn = boto3.client("stepfunctions")
            execution = sfn.start_execution(stateMachineArn=arns["state_machine_arn"], input=payload,
                                            name=f"test-{uuid.uuid4().hex[:12]}")
            return wait_for_execution(execution["executionArn"], timeout=300)

        yield {"run": run, "arns": arns, "invocations": invocations, "source": totesys_url,
               "warehouse": warehouse_url}


@pytest.fixture
def engine(aws_env, monkeypatch, totesys_url, warehouse_url):
    """The pipeline in moto with the real handlers (see ``_engine``)."""
    yield from _engine(monkeypatch, totesys_url, warehouse_url, _handlers())


# Warehouse relations that must hold exactly as many rows as a source table once every batch is loaded
# (facts keep every version: their current_* views hold one row per source row).
RECONCILED = {"current_sales_order": "sales_order", "current_purchase_order": "purchase_order",
              "current_payment": "payment", "dim_staff": "staff", "dim_location": "address",
              "dim_currency": "currency", "dim_design": "design", "dim_counterparty": "counterparty",
              "dim_transaction": "transaction", "dim_payment_type": "payment_type"}


def _assert_reconciled(engine):
    counts = {table: (_count(engine["warehouse"], table), _count(engine["source"], source))
              for table, source in RECONCILED.items()}
    assert all(loaded == source for loaded, source in counts.values()), \
        f"warehouse rows != source rows: {counts}"


def _ingest_state():
    body = boto3.client("s3").get_object(Bucket="sm-ingest", Key="_state/ingest.json")["Body"].read()
    return json.loads(body)


def _alerts(engine):
    return published_alerts(engine["arns"]["alert_topic_arn"])


def test_every_execution_runs_every_stage_even_with_no_changes(engine):
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    first = engine["run"]()
    assert first["status"] == "SUCCEEDED", first
    assert engine["invocations"] == ["totesys-ingest", "totesys-transform", "totesys-load"]
    output = json.loads(first["output"])
    assert set(output["ingest"]["files"]) >= {"sales_order", "payment", "address"}
    _assert_reconciled(engine)

    second = engine["run"]()
    assert second["status"] == "SUCCEEDED", second
    # Nothing changed: transform and load still run (they are what retries a pending batch) and do nothing.
    assert engine["invocations"] == ["totesys-ingest", "totesys-transform", "totesys-load"]
    output = json.loads(second["output"])
    assert output["ingest"]["files"] == {}
    assert output["transform"]["result"] == {"batches": [], "tables": {}}
    assert output["load"]["result"]["batches"] == []
    _assert_reconciled(engine)
    assert _alerts(engine) == []


def test_unreachable_warehouse_fails_every_execution_until_the_pending_batch_loads(engine):
    """S3 keeps the batch a failed load left behind; later executions with NO new source changes must
    keep failing and alerting (the old AnyChanges choice let them succeed over a stale warehouse),
    and the first execution after the warehouse is back loads the pending batch."""
    from totesys_local.cluster import free_port
    put_credentials_secret("sm/totesys", engine["source"])
    # The warehouse is unreachable: load raises DatabaseUnavailableError, a retryable error.
    put_credentials_secret("sm/warehouse", engine["warehouse"], port=free_port(), password="pw-never-shown")
    load_retry = next(r for r in TASKS["Load"]["Retry"] if "DatabaseUnavailableError" in r["ErrorEquals"])

    first = engine["run"]()
    assert first["status"] == "FAILED" and first["error"] == "PipelineFailed", first
    pending_batch = _ingest_state()["manifest_key"]
    assert engine["invocations"].count("totesys-load") == 1 + load_retry["MaxAttempts"]
    alerts = _alerts(engine)
    assert len(alerts) == 1
    message = alerts[0]["message"]
    assert "stage load" in message and "DatabaseUnavailableError" in message
    assert first["executionArn"] in message
    assert "pw-never-shown" not in message
    assert alerts[0]["subject"] == "ToteSys pipeline failed"

    second = engine["run"]()
    assert second["status"] == "FAILED", f"a pending batch that cannot load must fail the execution: {second}"
    assert engine["invocations"] == ["totesys-ingest", "totesys-transform"] + \
        ["totesys-load"] * (1 + load_retry["MaxAttempts"])
    alerts = _alerts(engine)
    assert len(alerts) == 2, alerts
    assert "stage load" in alerts[1]["message"] and second["executionArn"] in alerts[1]["message"]
    assert _ingest_state()["manifest_key"] == pending_batch, "no new source changes: no new ingest batch"
    assert run_sql(engine["warehouse"], "SELECT to_regclass('fact_sales_order')") == [[None]]

    put_credentials_secret("sm/warehouse", engine["warehouse"])
    third = engine["run"]()
    assert third["status"] == "SUCCEEDED", third
    assert json.loads(third["output"])["ingest"]["files"] == {}, "no new source changes in the third run"
    assert len(json.loads(third["output"])["load"]["result"]["batches"]) == 1
    _assert_reconciled(engine)
    assert len(_alerts(engine)) == 2


def test_transform_failing_for_a_non_data_reason_fails_every_execution_until_mended(engine):
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    assert engine["run"]()["status"] == "SUCCEEDED"
    s3 = boto3.client("s3")
    state_key = "_state/transform.json"
    good_state = s3.get_object(Bucket="sm-processed", Key=state_key)["Body"].read()
    # A change in the source, then a corrupt transform state pointer: the new batch cannot be transformed.
    run_sql(engine["source"], "UPDATE payment SET paid = NOT paid, last_updated = now() WHERE payment_id = 1")
    s3.put_object(Bucket="sm-processed", Key=state_key, Body=b"{not json")

    for attempt in range(2):  # the second execution has no new source changes
        result = engine["run"]()
        assert result["status"] == "FAILED", f"execution {attempt + 1} must fail until mended: {result}"
        assert engine["invocations"] == ["totesys-ingest", "totesys-transform"]
        message = _alerts(engine)[attempt]["message"]
        assert "stage transform" in message and "CorruptFileError" in message and state_key in message
    assert len(_alerts(engine)) == 2

    s3.put_object(Bucket="sm-processed", Key=state_key, Body=good_state)
    mended = engine["run"]()
    assert mended["status"] == "SUCCEEDED", mended
    assert json.loads(mended["output"])["ingest"]["files"] == {}
    assert len(json.loads(mended["output"])["load"]["result"]["batches"]) == 1
    _assert_reconciled(engine)
    assert _count(engine["warehouse"], "fact_payment WHERE payment_id = 1") == 2  # both versions
    paid_now = run_sql(engine["source"], "SELECT paid FROM payment WHERE payment_id = 1")
    assert run_sql(engine["warehouse"], "SELECT paid FROM current_payment WHERE payment_id = 1") == paid_now
    assert len(_alerts(engine)) == 2


def test_non_retryable_failure_alerts_without_retrying(engine):
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    result = engine["run"](json.dumps({"tables_to_query": ["address; DROP TABLE staff"]}))
    assert result["status"] == "FAILED"
    assert engine["invocations"] == ["totesys-ingest"]
    message = published_alerts(engine["arns"]["alert_topic_arn"])[0]["message"]
    assert "stage ingest" in message and "UnknownTableError" in message


# -- the data-quality branch -------------------------------------------------------------------------

@pytest.fixture
def quarantine_report():
    """What the wrapped load handler adds to its real output: {} adds nothing (keys absent)."""
    return {}


@pytest.fixture
def engine_with_quarantine(aws_env, monkeypatch, totesys_url, warehouse_url, quarantine_report):
    """The engine with the real load handler wrapped in-process to add ``quarantine_report`` to its
    output (``rejected_rows``, ``rejected``), standing in for the load stage's quarantine until it
    lands; the lead adds an end-to-end test with real bad rows."""
    import load

    def load_reporting_quarantine(event, context):
        return {**load.lambda_handler(event, context), **quarantine_report}

    handlers = dict(_handlers(), **{"totesys-load": load_reporting_quarantine})
    yield from _engine(monkeypatch, totesys_url, warehouse_url, handlers)


def test_quarantined_rows_publish_one_data_quality_alert_and_the_execution_succeeds(
        engine_with_quarantine, quarantine_report):
    """The load's quarantine report is simulated: a wrapper around the real load handler adds
    ``rejected_rows``/``rejected`` to its real output until the load stage's quarantine lands (an
    end-to-end test with real bad rows comes with it). Everything else is real."""
    engine = engine_with_quarantine
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    quarantine_report.update(rejected_rows=3, rejected={"sales_order": 2, "payment": 1})
    result = engine["run"]()
    assert result["status"] == "SUCCEEDED", result
    _assert_reconciled(engine)  # the good rows loaded
    alerts = _alerts(engine)
    assert len(alerts) == 1, alerts
    assert alerts[0]["subject"] == "ToteSys data-quality alert"
    message = alerts[0]["message"]
    batches = json.loads(result["output"])["load"]["result"]["batches"]
    assert len(batches) == 1
    assert "3 row(s)" in message and '{"sales_order":2,"payment":1}' in message
    assert result["executionArn"] in message
    assert "FAILED" not in message
    # The query in the message runs as written and selects exactly this execution's batches.
    query = re.search(r"SELECT \* FROM etl_rejected_rows WHERE batch_id IN \(.*?\)\);", message).group(0)
    assert json.dumps(batches) in query
    stand_in = "WITH etl_rejected_rows (batch_id) AS (VALUES (:batch), ('another batch')) "
    selected = run_sql(engine["warehouse"], stand_in + query.rstrip(";"), batch=batches[0])
    assert selected == [[batches[0]]]

    # A later execution reporting 0 rejected rows, or no quarantine keys at all, alerts nothing more.
    quarantine_report.update(rejected_rows=0, rejected={})
    assert engine["run"]()["status"] == "SUCCEEDED"
    quarantine_report.clear()
    assert engine["run"]()["status"] == "SUCCEEDED"
    assert len(_alerts(engine)) == 1


def test_a_data_quality_alert_that_cannot_be_published_fails_the_execution(
        engine_with_quarantine, quarantine_report):
    """A quarantine nobody hears about must not pass as a success (quarantine report simulated as above)."""
    engine = engine_with_quarantine
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    quarantine_report.update(rejected_rows=1, rejected={"payment": 1})
    boto3.client("sns").delete_topic(TopicArn=engine["arns"]["alert_topic_arn"])
    result = engine["run"]()
    assert result["status"] == "FAILED", result
    assert result["error"] == "DataQualityAlertFailed"
    assert "etl_rejected_rows" in result["cause"]
    _assert_reconciled(engine)  # the good rows are loaded all the same


def test_real_bad_rows_are_quarantined_alerted_once_and_the_execution_succeeds(engine):
    """End to end with the real load: a warehouse whose dim_location.city is varchar(20) and a source city
    changed to one too long for it. The new version goes to etl_rejected_rows, one data-quality alert names
    it, the rest of the batch loads and the warehouse keeps the previous version of the address."""
    from utils.load.schema import schema_statements
    for statement in schema_statements():
        run_sql(engine["warehouse"], statement.replace("    city varchar NOT NULL",
                                                       "    city varchar(20) NOT NULL"))
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    assert engine["run"]()["status"] == "SUCCEEDED"
    city = run_sql(engine["warehouse"], "SELECT city FROM dim_location WHERE location_id = 3")
    run_sql(engine["source"], "UPDATE address SET city = 'Llanfairpwllgwyngyllgogerychwyrndrobwll', "
                              "last_updated = now() WHERE address_id = 3")
    run_sql(engine["source"], "UPDATE sales_order SET units_sold = 4321, last_updated = now() "
                              "WHERE sales_order_id = 1")
    result = engine["run"]()
    assert result["status"] == "SUCCEEDED", result
    load_result = json.loads(result["output"])["load"]["result"]
    assert load_result["rejected_rows"] == 1 and load_result["rejected"] == {"address": 1}
    assert run_sql(engine["warehouse"], "SELECT source_table, source_id, column_name, value "
                                        "FROM etl_rejected_rows") \
        == [["address", 3, "city", "Llanfairpwllgwyngyllgogerychwyrndrobwll"]]
    alerts = _alerts(engine)
    assert [alert["subject"] for alert in alerts] == ["ToteSys data-quality alert"]
    assert '{"address":1}' in alerts[0]["message"]
    assert run_sql(engine["warehouse"], "SELECT city FROM dim_location WHERE location_id = 3") == city
    assert run_sql(engine["warehouse"], "SELECT units_sold FROM current_sales_order "
                                        "WHERE sales_order_id = 1") == [[4321]]
    # nothing new: no second alert
    assert engine["run"]()["status"] == "SUCCEEDED"
    assert len(_alerts(engine)) == 1
