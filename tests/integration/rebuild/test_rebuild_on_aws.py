"""The rebuild on AWS: the execution input ``{"rebuild": {...}}`` run in moto's Step Functions engine with the
real handlers under the production IAM rules (main-terraform/iam.tf, enforced by the emulation), in bounded
rounds, over a landing zone built by several incremental executions."""
import json
import uuid

import boto3
import pytest

from tests.support.compare import contents, relations
from tests.support.db import run_sql
from totesys_local import aws_emulation
from totesys_local.aws_emulation import (create_buckets, deploy_pipeline, emulated_aws, published_alerts,
                                         put_credentials_secret, wait_for_execution)
from utils.errors import CorruptFileError

PROCESSED = "rb-processed"
NEW_ORDERS = ("INSERT INTO sales_order (sales_order_id, created_at, last_updated, design_id, staff_id, "
              "counterparty_id, units_sold, unit_price, currency_id, agreed_delivery_date, "
              "agreed_payment_date, agreed_delivery_location_id) SELECT n, localtimestamp, localtimestamp + "
              "n * interval '1 millisecond', 1, 1, 1, n * 10, 3.25, 1, '2024-12-01', '2024-12-02', 2 "
              "FROM generate_series(CAST(:lo AS int), CAST(:hi AS int)) n")


class Rounds:
    """A stage's handler, recording how many batches each of its rebuild rounds took; with ``fail_at``,
    raising a non-retryable error on that rebuild round (then never again)."""

    def __init__(self, handler, fail_at=None):
        self.handler, self.fail_at, self.batches = handler, fail_at, []

    def __call__(self, event, context):
        if "rebuild" in event and len(self.batches) + 1 == self.fail_at:
            self.fail_at = None
            raise CorruptFileError("injected: a rebuild round's load failed")
        result = self.handler(event, context)
        if "rebuild" in result and "start_rebuild" not in event:
            self.batches.append(len(result["batches"]))
        return result


@pytest.fixture
def engine(aws_env, monkeypatch, source_url, warehouse_url):
    """The pipeline deployed in moto with the real handlers (the load's 3rd rebuild round fails once)."""
    import ingest
    import load
    import transform
    for key, value in {"INGEST_BUCKET": "rb-ingest", "PROCESSED_BUCKET": PROCESSED,
                       "TOTESYS_SECRET_ID": "rb/totesys", "WAREHOUSE_SECRET_ID": "rb/warehouse"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAX_BATCH_ROWS", "2")  # bounded batches: several per catch-up
    rounds = {"transform": Rounds(transform.lambda_handler), "load": Rounds(load.lambda_handler, fail_at=3)}
    handlers = {"totesys-ingest": ingest.lambda_handler, "totesys-transform": rounds["transform"],
                "totesys-load": rounds["load"]}
    with emulated_aws(handlers) as invocations:
        create_buckets(("rb-ingest", PROCESSED))
        arns = deploy_pipeline("totesys")
        put_credentials_secret("rb/totesys", source_url)
        put_credentials_secret("rb/warehouse", warehouse_url)

        def run(payload=None):
            invocations.clear()
            execution = boto3.client("stepfunctions").start_execution(
                stateMachineArn=arns["state_machine_arn"], input=json.dumps(payload or {}),
                name=f"test-{uuid.uuid4().hex[:12]}")
            return wait_for_execution(execution["executionArn"], timeout=300)

        yield {"run": run, "invocations": invocations, "alerts": lambda: published_alerts(
            arns["alert_topic_arn"]), "source": source_url, "warehouse": warehouse_url, "rounds": rounds}


def _history(engine):
    """Incremental executions: new orders, fact and dimension updates, a quarantined row later fixed,
    deletes and a re-insert, each landed in batches of at most 2 order rows."""
    source = engine["source"]
    steps = [
        [],
        [(NEW_ORDERS, {"lo": 10, "hi": 15})],
        [("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = localtimestamp "
          "WHERE sales_order_id IN (1, 10, 11)", {}),
         ("UPDATE address SET city = 'Bradford', last_updated = localtimestamp WHERE address_id = 1", {}),
         ("UPDATE purchase_order SET agreed_delivery_date = '2024-02-30', last_updated = localtimestamp", {}),
         ("DELETE FROM sales_order WHERE sales_order_id IN (12, 13)", {})],
        [("UPDATE purchase_order SET agreed_delivery_date = '2024-03-01', last_updated = localtimestamp", {}),
         (NEW_ORDERS, {"lo": 12, "hi": 12})],
    ]
    for statements in steps:
        for sql, params in statements:
            run_sql(source, sql, **params)
        result = engine["run"]()
        assert result["status"] == "SUCCEEDED", result


def _pointer():
    body = boto3.client("s3").get_object(Bucket=PROCESSED, Key="_state/rebuild.json")["Body"].read()
    return json.loads(body)


@pytest.mark.slow  # several executions of the state machine: not in make test-fast
def test_a_rebuild_runs_in_bounded_rounds_resumes_after_a_failure_and_equals_the_incremental_warehouse(
        engine, new_database, monkeypatch):
    _history(engine)
    incremental = engine["warehouse"]
    ledger = [row[0] for row in run_sql(incremental, "SELECT batch_id FROM etl_load_ledger ORDER BY 1")]
    assert len(ledger) >= 6, ledger  # bounded: the history was cut into many batches
    assert run_sql(incremental, "SELECT count(*) FROM etl_rejected_rows")[0][0] >= 1
    assert run_sql(incremental, "SELECT count(*) FROM etl_deleted_rows")[0][0] == 2

    # The configured warehouse holds loaded batches: refused, clearly, and nothing is written.
    refused = engine["run"]({"rebuild": {}})
    assert refused["status"] == "FAILED", refused
    assert engine["invocations"] == ["totesys-load"]
    message = engine["alerts"]()[-1]["message"]
    assert "stage rebuild start: RebuildError" in message and "already holds loaded batches" in message
    assert not boto3.client("s3").list_objects_v2(Bucket=PROCESSED, Prefix="_generations/").get("KeyCount")

    # Pointed at an empty database, the rebuild starts; the load of its third round fails before loading
    # (the execution fails and alerts; that round's transform had written its batches). Without a row cap
    # (MAX_BATCH_ROWS 0; the bound on rows is tested below) each invocation takes batches_per_invocation.
    monkeypatch.setenv("MAX_BATCH_ROWS", "0")
    rebuilt = new_database()
    put_credentials_secret("rb/warehouse", rebuilt)
    failed = engine["run"]({"rebuild": {"batches_per_invocation": 2}})
    assert failed["status"] == "FAILED", failed
    assert "stage load: CorruptFileError" in engine["alerts"]()[-1]["message"]
    generation = _pointer()["generation"]
    assert _pointer() == {"generation": generation, "finished": False, "batches_per_invocation": 2,
                          "started": _pointer()["started"]}
    done_before = run_sql(rebuilt, "SELECT batch_id FROM etl_load_ledger ORDER BY 1")
    assert [row[0] for row in done_before] == ledger[:4]  # two rounds of two batches

    # The next execution (the schedule's, {}) continues the rebuild where it stopped, in rounds of at most
    # two batches per invocation, and finishes it.
    resumed = engine["run"]()
    assert resumed["status"] == "SUCCEEDED", resumed
    assert engine["invocations"][:3] == ["totesys-ingest", "totesys-transform", "totesys-load"]
    transformed, loaded = engine["rounds"]["transform"].batches, engine["rounds"]["load"].batches
    assert max(transformed) == max(loaded) == 2, (transformed, loaded)  # bounded invocations
    assert sum(transformed) == sum(loaded) == len(ledger), (transformed, loaded)  # each batch once
    assert len(loaded) >= len(ledger) // 2
    assert _pointer()["finished"] is True and _pointer()["generation"] == generation

    assert relations(rebuilt) == relations(incremental)
    for relation in relations(incremental):
        assert contents(rebuilt, relation) == contents(incremental, relation), relation
    # Every processed object of the rebuild is in its generation; the incremental runs' are untouched.
    keys = [obj["Key"] for obj in boto3.client("s3").list_objects_v2(
        Bucket=PROCESSED, Prefix="_generations/")["Contents"]]
    assert keys and all(key.startswith(f"_generations/{generation}/") for key in keys)

    # After the rebuild the pipeline carries on as usual into the rebuilt warehouse.
    run_sql(engine["source"], "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp "
                              "WHERE payment_id = 1")
    after = engine["run"]()
    assert after["status"] == "SUCCEEDED", after
    paid = run_sql(engine["source"], "SELECT paid FROM payment WHERE payment_id = 1")
    assert run_sql(rebuilt, "SELECT paid FROM current_payment WHERE payment_id = 1") == paid
    # A second rebuild into the now-loaded warehouse is refused like the first.
    assert engine["run"]({"rebuild": {}})["status"] == "FAILED"


@pytest.mark.slow
def test_the_load_without_its_rebuild_pointer_grant_fails_the_start_naming_action_and_resource(
        monkeypatch, request):
    """Under the production IAM rules less one statement, the rebuild's start is denied (with every statement
    the same execution starts: the test above)."""
    render = aws_emulation.render_policies

    def without_pointer_grant(*args, **kwargs):
        policies = render(*args, **kwargs)
        for document in policies.values():
            document["Statement"] = [statement for statement in document["Statement"]
                                     if statement.get("Sid") != "WriteRebuildPointer"]
        return policies

    monkeypatch.setattr(aws_emulation, "render_policies", without_pointer_grant)
    engine = request.getfixturevalue("engine")
    result = engine["run"]({"rebuild": {}})
    assert result["status"] == "FAILED", result
    message = engine["alerts"]()[-1]["message"]
    assert "stage rebuild start" in message and "AccessDenied" in message, message
    assert f"s3:PutObject on arn:aws:s3:::{PROCESSED}/_state/rebuild.json" in message, message


def test_only_the_rebuild_underway_can_be_continued_and_no_second_one_starts(s3, buckets):
    from utils.aws.state import write_state
    from utils.rebuild.rounds import load_round, start_rebuild
    from utils.rebuild.run import RebuildError
    processed = buckets["processed"]
    with pytest.raises(RebuildError, match="no rebuild of generation g1 is underway .latest: none."):
        start_rebuild(None, s3, processed, {"generation": "g1"})
    write_state(s3, processed, "rebuild", {"generation": "g1", "finished": False, "started": "x",
                                           "batches_per_invocation": 3}, None)
    assert start_rebuild(None, s3, processed, {"generation": "g1"}) == {
        "rebuild": {"generation": "g1", "batches_per_invocation": 3}, "batches": [], "tables": {}}
    with pytest.raises(RebuildError, match="generation g1 is underway: every execution continues it"):
        start_rebuild(None, s3, processed, {})
    with pytest.raises(RebuildError, match="no rebuild of generation g0 is underway .latest: g1."):
        load_round(None, s3, processed, {"rebuild": {"generation": "g0"}}, 0)
    state = json.loads(s3.get_object(Bucket=processed, Key="_state/rebuild.json")["Body"].read())
    write_state(s3, processed, "rebuild", {**state, "finished": True},
                s3.head_object(Bucket=processed, Key="_state/rebuild.json")["ETag"])
    with pytest.raises(RebuildError, match="no rebuild of generation g1 is underway"):
        start_rebuild(None, s3, processed, {"generation": "g1"})
