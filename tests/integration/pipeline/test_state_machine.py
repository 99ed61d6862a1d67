"""The state machine definition, checked as written and executed for real in moto's Step Functions engine,
with the project's real handlers dispatched in-process against real PostgreSQL databases."""
import json
import re
import threading
import time
import uuid

import boto3
import pytest

from totesys_local import aws_emulation
from totesys_local.aws_emulation import (ASL_TEMPLATE, deploy_pipeline, emulated_aws, published_alerts,
                                         create_buckets, put_credentials_secret,
                                         render_definition, wait_for_execution)
from totesys_local.retry_clock import compressed_retry_waits
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
    # Jitter everywhere but on a lost database: one execution runs at a time, so there is no herd to
    # spread, and the waits must add up to a failover's length (see the failover tests below).
    assert all(r["JitterStrategy"] == ("NONE" if r["ErrorEquals"] == ["DatabaseUnavailableError"] else "FULL")
               for r in state["Retry"])
    assert "StorageThrottledError" in {e for r in state["Retry"] for e in r["ErrorEquals"]}
    catch = state["Catch"][0]
    assert catch["ErrorEquals"] == ["States.ALL"]
    handler = DEFINITION["States"][catch["Next"]]
    assert handler["Type"] == "Pass" and handler["Parameters"]["stage"] == stage.lower()
    notify = DEFINITION["States"][handler["Next"]]
    assert notify["Resource"] == "arn:aws:states:::sns:publish"
    assert DEFINITION["States"][notify["Next"]]["Type"] == "Fail"


# The Lambda invoke errors AWS documents as transient (Step Functions, "Handling transient Lambda service
# exceptions"), plus Lambda.Unknown (a timeout or out-of-memory end without an error type).
TRANSIENT_LAMBDA_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException",
                           "Lambda.SdkClientException", "Lambda.ClientExecutionTimeoutException",
                           "Lambda.TooManyRequestsException"}


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_retries_the_transient_lambda_errors(stage):
    retriers = TASKS[stage]["Retry"]
    (transient,) = [r for r in retriers if "Lambda.ServiceException" in r["ErrorEquals"]]
    assert set(transient["ErrorEquals"]) == TRANSIENT_LAMBDA_ERRORS
    assert transient["MaxAttempts"] >= 2
    (unknown,) = [r for r in retriers if "Lambda.Unknown" in r["ErrorEquals"]]
    # once: a stage that timed out (or ran out of memory) will usually do so again
    assert unknown["ErrorEquals"] == ["Lambda.Unknown"] and unknown["MaxAttempts"] == 1


def test_the_execution_first_checks_for_another_running_execution():
    states = DEFINITION["States"]
    keep = states[DEFINITION["StartAt"]]
    assert keep["Type"] == "Pass" and keep["Parameters"] == {"request.$": "$"}
    assert TASKS["Ingest"]["Parameters"]["Payload.$"] == "$.request", "the ingest event = the execution input"
    check = states[keep["Next"]]
    assert check["Resource"] == "arn:aws:states:::aws-sdk:sfn:listExecutions"
    assert check["Parameters"] == {"StateMachineArn.$": "$$.StateMachine.Id", "StatusFilter": "RUNNING",
                                   "MaxResults": 100}
    assert check["ResultPath"] == "$.overlap"
    failed = states[check["Catch"][0]["Next"]]
    assert failed["Parameters"]["stage"] == "overlap check" and failed["Next"] == "NotifyFailure"
    choice = states[check["Next"]]
    assert choice["Type"] == "Choice" and choice["Default"] == "Ingest"
    skip = states[choice["Choices"][0]["Next"]]
    assert skip["ResultPath"] == "$.skipped" and states[skip["Next"]]["Type"] == "Succeed"


def test_emulation_speaks_aws_sdk_integration_casing():
    """AWS SDK integrations take and return PascalCase names; moto 5.2 hands them to boto3 unchanged, so the
    emulation translates both ways with botocore's model, as AWS does (see aws_emulation's docstring)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk \
        import StateTaskServiceAwsSdk
    service = StateTaskServiceAwsSdk.__new__(StateTaskServiceAwsSdk)
    service.resource = type("Resource", (), {"api_name": "sfn", "api_action": "listExecutions",
                                             "resource_arn": "arn:aws:states:::aws-sdk:sfn:listExecutions"})()
    parameters = {"StateMachineArn": "arn:sm", "StatusFilter": "RUNNING", "MaxResults": 100}
    aws_emulation._aws_sdk_request_as_aws(service, parameters)
    assert parameters == {"stateMachineArn": "arn:sm", "statusFilter": "RUNNING", "maxResults": 100}
    response = {"executions": [{"executionArn": "arn:x", "status": "RUNNING"}]}
    aws_emulation._aws_sdk_response_as_aws(service, response)
    assert response == {"Executions": [{"ExecutionArn": "arn:x", "Status": "RUNNING"}]}


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


# -- overlapping executions --------------------------------------------------------------------------

@pytest.fixture
def ingest_gate():
    """Holds the FIRST ingest invocation until set; later invocations go straight through."""
    return threading.Event()


@pytest.fixture
def engine_with_held_ingest(aws_env, monkeypatch, totesys_url, warehouse_url, ingest_gate):
    import ingest
    calls = []

    def ingest_held_once(event, context):
        calls.append(event)
        if len(calls) == 1:
            assert ingest_gate.wait(120), "the test never released the first ingest"
        return ingest.lambda_handler(event, context)

    handlers = dict(_handlers(), **{"totesys-ingest": ingest_held_once})
    yield from _engine(monkeypatch, totesys_url, warehouse_url, handlers)


def test_an_execution_started_during_another_succeeds_at_once_without_alerting(
        engine_with_held_ingest, ingest_gate):
    """A manual start during a scheduled run: the second execution finds the first RUNNING (through the
    real aws-sdk:sfn:listExecutions task in moto's engine), runs no stage and succeeds; the first goes on
    and loads everything. Before, the second ran into the ingest lock, retried, failed and alerted."""
    engine = engine_with_held_ingest
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    sfn = boto3.client("stepfunctions")
    first = sfn.start_execution(stateMachineArn=engine["arns"]["state_machine_arn"], input="{}",
                                name="scheduled")["executionArn"]
    deadline = time.monotonic() + 60
    while "totesys-ingest" not in engine["invocations"]:  # the first is now inside ingest
        assert time.monotonic() < deadline, "the first execution never reached ingest"
        time.sleep(0.05)

    second = engine["run"]('{"tables_to_query": ["sales_order"]}')
    assert second["status"] == "SUCCEEDED", second
    output = json.loads(second["output"])
    assert "another execution" in output["skipped"]
    assert output["request"] == {"tables_to_query": ["sales_order"]}
    assert not {"ingest", "transform", "load"} & set(output)
    assert engine["invocations"] == [], "the skipped execution must not invoke any stage"

    ingest_gate.set()
    result = wait_for_execution(first, timeout=300)
    assert result["status"] == "SUCCEEDED", result
    assert "skipped" not in json.loads(result["output"])
    _assert_reconciled(engine)
    assert _alerts(engine) == []


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


# -- a connection lost mid-stage: retried by the state machine -----------------------------------------

def _terminate_running(url, statement_like):
    """From another connection: terminate the backend of ``url``'s database whose current (or, once it
    is done, last) statement is LIKE ``statement_like``, if there is one (waiting up to 10 s for it to
    exit); return its statement, if any."""
    rows = run_sql(url, "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND query LIKE :like LIMIT 1", like=statement_like)
    for pid, _ in rows:
        run_sql(url, "SELECT pg_terminate_backend(:pid, 10000)", pid=pid)
    return [query for _, query in rows]


@pytest.fixture
def killed_queries():
    """The statements whose backend the hook terminated (it terminates once, then never again)."""
    return []


@pytest.fixture
def engine_killing_ingest_copy(aws_env, monkeypatch, totesys_url, warehouse_url, killed_queries):
    """The engine, with ingest's COPY sink of sales_order (the largest table) terminating the source
    backend that streams its rows when the first block arrives: the connection dies while the COPY is
    being read, once. (Whether the server had sent the last row by then depends on socket buffers, so
    the error surfaces in the COPY or the next statement; tests/integration/db/test_db_connection_lost.py pins
    each statement kind deterministically.) One connection reads every table, in dependency order, so
    statements always follow the kill on the dead connection (a helper connection killed after its last
    table would rightly change nothing: its rows were all read)."""
    from utils.ingest.sink import ParquetSink
    monkeypatch.setenv("INGEST_PARALLEL_CONNECTIONS", "1")
    real_write = ParquetSink.write

    def write(self, data):
        if self.table == "sales_order" and not killed_queries:
            killed_queries.extend(_terminate_running(totesys_url, 'COPY (SELECT "sales_order_id"%'))
        return real_write(self, data)

    monkeypatch.setattr(ParquetSink, "write", write)
    yield from _engine(monkeypatch, totesys_url, warehouse_url, _handlers())


@pytest.fixture
def engine_killing_load_copy(aws_env, monkeypatch, totesys_url, warehouse_url, killed_queries):
    """The engine, with load's COPY FROM STDIN of the sales facts terminating the warehouse backend after
    its first block of rows was sent (the staging connection's, while the batch's transaction has
    already upserted the dimensions; or the batch's own when it stages in its transaction): the
    connection dies mid-load, once."""
    import io

    from utils.load import merge, staging
    real_stream = merge.csv_stream

    class KillingStream(io.BytesIO):
        def readinto(self, buffer):
            if self.tell() and not killed_queries:
                killed_queries.extend(_terminate_running(warehouse_url, "COPY %stage_fact_sales_order%"))
            return super().readinto(buffer)

    def stream(table):
        rows = real_stream(table)
        if "units_sold" in table.column_names:
            return KillingStream(rows.getvalue())
        return rows

    monkeypatch.setattr(merge, "csv_stream", stream)
    monkeypatch.setattr(staging, "csv_stream", stream)
    yield from _engine(monkeypatch, totesys_url, warehouse_url, _handlers())


def _stage_failures(caplog):
    return [(r.levelname, r.error_type) for r in caplog.records if getattr(r, "error_type", None)]


def test_a_source_connection_lost_mid_copy_is_retried_and_the_execution_reconciles(
        engine_killing_ingest_copy, killed_queries, caplog):
    engine = engine_killing_ingest_copy
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    result = engine["run"]()
    assert len(killed_queries) == 1 and killed_queries[0].startswith("COPY ("), killed_queries
    assert result["status"] == "SUCCEEDED", result
    assert engine["invocations"] == ["totesys-ingest", "totesys-ingest", "totesys-transform", "totesys-load"]
    _assert_reconciled(engine)
    assert _alerts(engine) == []
    # One ERROR line for the retried failure, no CRITICAL line (the CRITICAL alarm counts real failures).
    assert _stage_failures(caplog) == [("ERROR", "DatabaseUnavailableError")]
    message = next(r.error for r in caplog.records if getattr(r, "error_type", None))
    assert message.startswith("lost the connection to database at ") and " (totesys) during " in message


def test_a_warehouse_connection_lost_mid_load_is_retried_and_the_execution_reconciles(
        engine_killing_load_copy, killed_queries, caplog):
    engine = engine_killing_load_copy
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    result = engine["run"]()
    assert len(killed_queries) == 1 and "FROM STDIN" in killed_queries[0], killed_queries
    message = next(r.error for r in caplog.records if getattr(r, "error_type", None))
    assert " (warehouse) during COPY: " in message
    assert result["status"] == "SUCCEEDED", result
    assert engine["invocations"] == ["totesys-ingest", "totesys-transform", "totesys-load", "totesys-load"]
    _assert_reconciled(engine)
    assert _count(engine["warehouse"], "etl_load_ledger") == 1
    assert _alerts(engine) == []
    assert _stage_failures(caplog) == [("ERROR", "DatabaseUnavailableError")]


# -- a database failover: the retries outlast it ---------------------------------------------------------

# (secret, stage handler) of the database a stage needs.
FAILOVER_STAGES = {"ingest": ("sm/totesys", "source"), "load": ("sm/warehouse", "warehouse")}


@pytest.fixture
def failover():
    """The outage a test sets up: which database, for how many nominal seconds, and the retry clock
    (totesys_local.retry_clock) that measures the state machine's waits."""
    return {"stage": None, "seconds": 0.0, "clock": None}


@pytest.fixture
def engine_with_failover(aws_env, monkeypatch, totesys_url, warehouse_url, failover):
    """The engine, with the failed-over stage's real handler called after the database comes back once
    the state machine has waited ``failover["seconds"]`` (nominal, as AWS would wait): until then its
    secret names a port nothing listens on, so the real handler raises DatabaseUnavailableError."""
    import ingest
    import load
    real = {"ingest": ingest.lambda_handler, "load": load.lambda_handler}
    urls = {"source": totesys_url, "warehouse": warehouse_url}

    def wrap(stage):
        def handler(event, context):
            secret, database = FAILOVER_STAGES[stage]
            if failover["stage"] == stage and failover["clock"].elapsed >= failover["seconds"]:
                put_credentials_secret(secret, urls[database])  # the failover is over
            return real[stage](event, context)
        return handler

    handlers = dict(_handlers(), **{f"totesys-{stage}": wrap(stage) for stage in FAILOVER_STAGES})
    yield from _engine(monkeypatch, totesys_url, warehouse_url, handlers)


def _fail_over(engine, failover, stage, seconds):
    """Both secrets right, then ``stage``'s database unreachable for ``seconds`` of retry waits."""
    from totesys_local.cluster import free_port
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    secret, database = FAILOVER_STAGES[stage]
    put_credentials_secret(secret, engine[database], port=free_port())
    failover.update(stage=stage, seconds=seconds)


@pytest.mark.parametrize("stage", ["ingest", "load"])
def test_a_database_failover_of_two_and_a_half_minutes_is_ridden_out(engine_with_failover, failover, stage):
    """An RDS failover or restart takes 60-120 s, sometimes more. The deployed definition's waits run in
    moto's engine (compressed in real time, recorded at their nominal length): the stage retries after
    15, 30, 60 and 120 s, is back at 225 s, and the execution succeeds with no alert."""
    engine = engine_with_failover
    _fail_over(engine, failover, stage, seconds=150)
    with compressed_retry_waits(scale=0) as clock:
        failover["clock"] = clock
        result = engine["run"]()
    assert result["status"] == "SUCCEEDED", result
    assert clock.waits == [15, 30, 60, 120]
    assert engine["invocations"].count(f"totesys-{stage}") == 5
    _assert_reconciled(engine)
    assert _alerts(engine) == []


def test_a_warehouse_down_longer_than_the_retries_fails_once_after_three_minutes(
        engine_with_failover, failover):
    engine = engine_with_failover
    _fail_over(engine, failover, "load", seconds=3600)
    with compressed_retry_waits(scale=0) as clock:
        failover["clock"] = clock
        result = engine["run"]()
    assert result["status"] == "FAILED" and result["error"] == "PipelineFailed", result
    assert clock.elapsed >= 180, clock.waits
    assert engine["invocations"].count("totesys-load") == 5
    alerts = _alerts(engine)
    assert len(alerts) == 1 and "DatabaseUnavailableError" in alerts[0]["message"]


# -- one execution, one release ------------------------------------------------------------------------------

def test_an_execution_running_across_a_deploy_runs_the_release_it_started_with(
        engine_with_held_ingest, ingest_gate, monkeypatch):
    """main-terraform publishes a version per deploy and names it in the definition. While the first
    execution is held in ingest, a deploy publishes version 2 of every function and updates the state
    machine: the running execution's transform and load still invoke version 1, the next execution
    version 2."""
    from moto.awslambda_simple.models import LambdaSimpleBackend
    engine = engine_with_held_ingest
    put_credentials_secret("sm/totesys", engine["source"])
    put_credentials_secret("sm/warehouse", engine["warehouse"])
    invoked = []
    emulated_invoke = LambdaSimpleBackend.invoke

    def recording_invoke(self, function_name, qualifier, *args):
        invoked.append(function_name.split(":function:")[-1] if qualifier is None
                       else f"{function_name.split(':function:')[-1]}:{qualifier}")
        return emulated_invoke(self, function_name, qualifier, *args)

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", recording_invoke)
    sfn, lam = boto3.client("stepfunctions"), boto3.client("lambda")
    first = sfn.start_execution(stateMachineArn=engine["arns"]["state_machine_arn"], input="{}",
                                name="before-the-deploy")["executionArn"]
    deadline = time.monotonic() + 60
    while not invoked:
        assert time.monotonic() < deadline, "the first execution never reached ingest"
        time.sleep(0.05)

    import io
    import zipfile
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("RELEASE.txt", "2")
    release_2 = dict(engine["arns"])
    for stage in ("ingest", "transform", "load"):
        lam.update_function_code(FunctionName=f"totesys-{stage}", ZipFile=code.getvalue())
        version = lam.publish_version(FunctionName=f"totesys-{stage}")["Version"]
        assert version == "2"
        release_2[f"{stage}_function_arn"] = engine["arns"][f"{stage}_function_arn"].rsplit(":", 1)[0] + ":2"
    sfn.update_state_machine(stateMachineArn=engine["arns"]["state_machine_arn"],
                             definition=render_definition(release_2))
    ingest_gate.set()
    assert wait_for_execution(first, timeout=300)["status"] == "SUCCEEDED"
    assert [name.rsplit(":", 1)[-1] for name in invoked] == ["1", "1", "1"], invoked

    invoked.clear()
    assert engine["run"]()["status"] == "SUCCEEDED"
    assert [name.rsplit(":", 1)[-1] for name in invoked] == ["2", "2", "2"], invoked
