"""Bounded batches (utils/ingest/bounded.py, issue 11): a tiny MAX_BATCH_ROWS forces many batches on the
scale-1 data; the warehouse then reconciles exactly with totesys, and the state machine loops until caught
up."""
import json
import uuid

import boto3
import pytest

import ingest
import load
import transform
import utils.ingest.run as ingest_run
from tests.support.db import run_sql as query
from tests.support.ingest_mode import cdc_session
from totesys_local.aws_emulation import deploy_pipeline, emulated_aws, wait_for_execution
from totesys_local.generator import simulate
from utils.config import load_settings
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.errors import ConfigError
from utils.ingest.bounded import BOUNDED_TABLES, batch_cut

CAP = 6_000
FACTS = {"sales_order": "fact_sales_order", "purchase_order": "fact_purchase_order",
         "payment": "fact_payment"}
DIMENSIONS = {"dim_location": "address", "dim_counterparty": "counterparty", "dim_staff": "staff",
              "dim_currency": "currency", "dim_design": "design", "dim_payment_type": "payment_type",
              "dim_transaction": "transaction"}


def versions(url, sql):
    return sorted(tuple(row) for row in query(url, sql))


def assert_reconciled(source, warehouse, known=None):
    """Every source version (and every one in ``known``: {table: set}, updated) is exactly one fact row,
    every source row one dimension row, nothing parked."""
    known = {} if known is None else known
    for table, fact in FACTS.items():
        known.setdefault(table, set()).update(
            versions(source, f"SELECT {table}_id, last_updated FROM {table}"))  # nosec B608
        assert versions(warehouse, f"SELECT {table}_id, last_updated_date + last_updated_time "  # nosec B608
                                   f"FROM {fact}") == sorted(known[table]), fact
    for dimension, table in DIMENSIONS.items():
        assert query(warehouse, f"SELECT count(*) FROM {dimension}") == \
            query(source, f"SELECT count(*) FROM {table}"), dimension  # nosec B608
    assert query(warehouse, "SELECT count(*) FROM etl_rejected_rows") == [[0]]


def ingest_manifests(s3, bucket):
    state = json.loads(s3.get_object(Bucket=bucket, Key="_state/ingest.json")["Body"].read())
    key, manifests = state.get("manifest_key"), []
    while key:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        manifests.append(manifest)
        key = manifest["prev_manifest_key"]
    return state, manifests[::-1]


@pytest.mark.slow  # about 12 s: a scale-1 pipeline in dozens of batches
def test_a_tiny_cap_lands_many_bounded_batches_that_reconcile_exactly(
        totesys_url, warehouse_url, pipeline_env, monkeypatch):
    buckets = pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    monkeypatch.setenv("MAX_BATCH_ROWS", str(CAP))
    s3 = boto3.client("s3")
    reads = []  # per round: whether it read the key sets (the state's keys_read moved)

    def ingest_state():
        return json.loads(s3.get_object(Bucket=buckets["ingest"], Key="_state/ingest.json")["Body"].read())

    def catch_up(between=None):
        rounds = 0
        while True:
            rounds += 1
            assert rounds < 50, "never caught up"
            before = ingest_state().get("keys_read") if rounds > 1 else None
            transformed = transform.lambda_handler(ingest.lambda_handler({}, None), None)
            reads.append(ingest_state()["keys_read"] != before)
            assert load.lambda_handler(transformed, None)["rejected_rows"] == 0
            if not transformed.get("more_waiting"):
                return rounds
            if between:
                between(rounds)

    # Between rounds of the backfill: a payment landed by round 1 deleted, and an order inserted with a
    # stamp below every window still to come (only the key sets find it). Round 2 reads no key sets;
    # round 3 must (their age is over the limit); the deletion and the order then land exactly once.
    landed = query(totesys_url, "SELECT payment_id, last_updated FROM payment "
                                "ORDER BY last_updated, payment_id LIMIT 1")[0]
    backdated = {}

    def between(rounds):
        if rounds == 1:
            query(totesys_url, f"DELETE FROM payment WHERE payment_id = {landed[0]}")  # nosec B608
            backdated["id"] = query(totesys_url, (
                "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, "
                "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                "agreed_delivery_location_id) SELECT created_at, last_updated, design_id, staff_id, "
                "counterparty_id, 3, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                "agreed_delivery_location_id FROM sales_order ORDER BY last_updated LIMIT 1 "
                "RETURNING sales_order_id"))[0][0]
        if rounds == 2 and not cdc_session():  # (a CDC snapshot's batches read the key sets every round)
            assert query(warehouse_url, "SELECT count(*) FROM etl_deleted_rows") == [[0]]
            monkeypatch.setattr("utils.ingest.run.KEY_SETS_MAX_AGE_SECONDS", 0)

    rounds = catch_up(between)
    assert rounds >= 4 and (cdc_session() or reads[:3] == [True, False, True]) and reads[-1], reads
    assert query(warehouse_url, "SELECT source_table, source_id FROM etl_deleted_rows") == \
        [["payment", landed[0]]]
    assert query(warehouse_url, "SELECT count(*) FROM fact_sales_order WHERE sales_order_id = "
                                f"{backdated['id']}") == [[1]]  # nosec B608
    monkeypatch.setattr("utils.ingest.run.KEY_SETS_MAX_AGE_SECONDS", 900)
    total = sum(query(totesys_url, f"SELECT count(*) FROM {table}")[0][0] for table in BOUNDED_TABLES)
    assert rounds >= total // CAP
    state, manifests = ingest_manifests(s3, buckets["ingest"])
    assert state["more_waiting"] is False and len(manifests) == rounds
    for manifest in manifests:
        assert sum(manifest["tables"].get(table, {}).get("rows", 0) for table in BOUNDED_TABLES) <= CAP
    assert query(warehouse_url, "SELECT count(*) FROM etl_load_ledger") == [[rounds]]
    known = {"payment": {tuple(landed)}}
    assert_reconciled(totesys_url, warehouse_url, known)

    # Later changes, a late update of an old order, then the same cap: still exact.
    simulate(totesys_url, minutes=30, seed=7)
    query(totesys_url, "UPDATE sales_order SET units_sold = 77, last_updated = now() "
                       "WHERE sales_order_id = 5")
    catch_up()
    assert_reconciled(totesys_url, warehouse_url, known)


@pytest.fixture
def source(totesys_url):
    conn = connect_to_db(credentials_from_url(totesys_url))
    yield conn
    close_db_connection(conn)


def test_the_cut_never_splits_one_time_and_never_makes_an_empty_batch(source):
    first = source.run("SELECT min(last_updated) FROM sales_order")[0][0]
    source.run("UPDATE sales_order SET last_updated = :first WHERE sales_order_id <= 30", first=first)
    upper = source.run("SELECT localtimestamp")[0][0]
    # 30+ rows share the first time: a cap of 10 takes all of them, cut at the next later time
    cut = batch_cut(source, ["sales_order"], {}, upper, 10)
    assert cut == source.run("SELECT min(last_updated) FROM sales_order WHERE last_updated > :first",
                             first=first)[0][0]
    rows = source.run("SELECT count(*) FROM sales_order WHERE last_updated < :cut", cut=cut)[0][0]
    assert rows >= 30
    # a cap the rows fit in, no cap, or no bounded table: no cut
    assert batch_cut(source, ["sales_order"], {}, upper, 10 ** 9) is None
    assert batch_cut(source, ["sales_order"], {}, upper, 0) is None
    assert batch_cut(source, ["address", "design"], {}, upper, 1) is None
    # the lower bound is each table's previous high
    assert batch_cut(source, ["sales_order"], {"sales_order": upper}, upper, 1) is None


@pytest.mark.slow  # about 7 s: emulated Step Functions executions
def test_the_state_machine_loops_until_caught_up(aws_env, monkeypatch, totesys_url, warehouse_url,
                                                 caplog):
    for key, value in {"INGEST_BUCKET": "bb-ingest", "PROCESSED_BUCKET": "bb-processed",
                       "TOTESYS_SECRET_ID": "bb/totesys", "WAREHOUSE_SECRET_ID": "bb/warehouse",
                       "MAX_BATCH_ROWS": "20000"}.items():
        monkeypatch.setenv(key, value)
    handlers = {"totesys-ingest": ingest.lambda_handler, "totesys-transform": transform.lambda_handler,
                "totesys-load": load.lambda_handler}
    with emulated_aws(handlers) as invocations:
        s3 = boto3.client("s3")
        for bucket in ("bb-ingest", "bb-processed"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        secrets = boto3.client("secretsmanager")
        for name, url in (("bb/totesys", totesys_url), ("bb/warehouse", warehouse_url)):
            secrets.create_secret(Name=name, SecretString=json.dumps(credentials_from_url(url)))
        arns = deploy_pipeline("totesys")
        sfn = boto3.client("stepfunctions")
        execution = sfn.start_execution(stateMachineArn=arns["state_machine_arn"], input="{}",
                                        name=f"bb-{uuid.uuid4().hex[:8]}")
        result = wait_for_execution(execution["executionArn"], timeout=300)
        assert result["status"] == "SUCCEEDED", result
        rounds = invocations.count("totesys-ingest")
        assert rounds >= 3 and invocations == ["totesys-ingest", "totesys-transform", "totesys-load"] * rounds
        output = json.loads(result["output"])
        assert output["overlap"]["round"]["n"] == rounds
        assert "more_waiting" not in output["transform"]["result"]
    # every choice tests only paths that are there: moto's engine prints an error for any other
    assert "NoSuchJsonPath" not in caplog.text
    assert_reconciled(totesys_url, warehouse_url)


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_a_bad_max_batch_rows_is_a_clear_config_error(monkeypatch, value):
    monkeypatch.setenv("INGEST_BUCKET", "i")
    monkeypatch.setenv("PROCESSED_BUCKET", "p")
    monkeypatch.setenv("MAX_BATCH_ROWS", value)
    with pytest.raises(ConfigError, match=f"MAX_BATCH_ROWS must be a non-negative integer .*{value!r}"):
        load_settings()


def test_max_batch_rows_defaults_to_the_documented_cap(monkeypatch):
    monkeypatch.setenv("INGEST_BUCKET", "i")
    monkeypatch.setenv("PROCESSED_BUCKET", "p")
    monkeypatch.delenv("MAX_BATCH_ROWS", raising=False)
    assert load_settings().max_batch_rows == 2_000_000
    monkeypatch.setenv("MAX_BATCH_ROWS", "0")
    assert load_settings().max_batch_rows == 0


# A backfill's intermediate rounds read no key sets (utils.ingest.run._key_sets_due, issue 24): what the
# rounds that skip them land must still be found deleted later, held deletions stay held (and alerted) until
# approved, a state written before ``keys_read``, an approval and a re-sync read them, and a round killed
# before its state advanced is retried exactly. One scale-1 backfill at a tiny cap, changed between its rounds
# the way an unlucky source or an operator would (docs/RELIABILITY.md defects 18 and 19).
BACKDATED_ORDER = (
    "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, "
    "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
    "agreed_delivery_location_id) SELECT created_at, CAST(:cut AS timestamp), design_id, staff_id, "
    "counterparty_id, 5, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
    "agreed_delivery_location_id FROM sales_order ORDER BY sales_order_id LIMIT 1 "
    "RETURNING sales_order_id")
DESIGN = ("INSERT INTO design (design_name, file_location, file_name, last_updated) "
          "VALUES (:name, '/x', 'x.json', localtimestamp) RETURNING design_id")


@pytest.mark.cursor_only("a CDC snapshot's batches read the key sets every round; CDC's own carry them")
def test_a_backfill_that_skips_key_sets_records_every_deletion_once_and_holds_mass_ones_until_approved(
        totesys_url, warehouse_url, pipeline_env, monkeypatch, caplog):
    buckets = pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    monkeypatch.setenv("MAX_BATCH_ROWS", str(CAP))
    monkeypatch.setenv("MAX_DELETE_FRACTION", "0.001")  # one design of ~470 is a mass deletion, one order not
    s3 = boto3.client("s3")

    def state():
        return json.loads(s3.get_object(Bucket=buckets["ingest"], Key="_state/ingest.json")["Body"].read())

    def held_alerts():
        return sum(r.getMessage().startswith("deletions held") for r in caplog.records)

    ids, held = {}, {}
    paid = query(totesys_url, "SELECT payment_id, last_updated FROM payment "
                              "ORDER BY last_updated, payment_id LIMIT 1")[0]

    def between(rounds, read):
        if rounds == 1:
            # A design inserted as usual (stamped now: the dimension tables are not cut, so the next round
            # lands it), another to be updated, and an order stamped at the cut (a backdated insert the
            # next round's window takes): all new since round 1's key sets. A payment round 1 landed is
            # deleted and inserted again under its id, stamped now.
            ids["design"] = query(totesys_url, DESIGN, name="short-lived")[0][0]
            ids["updated"] = query(totesys_url, DESIGN, name="to update")[0][0]
            ids["order"] = query(totesys_url, BACKDATED_ORDER,
                                 cut=state()["tables"]["sales_order"]["high"])[0][0]
            designs = query(totesys_url, "SELECT count(*) FROM design")[0][0]
            held["design"] = {"rows": 1, "table_rows": designs}
            query(totesys_url, "WITH gone AS (DELETE FROM payment WHERE payment_id = :id RETURNING *) "
                               "INSERT INTO payment SELECT * FROM gone", id=paid[0])
            query(totesys_url, "UPDATE payment SET last_updated = localtimestamp WHERE payment_id = :id",
                  id=paid[0])
        elif rounds == 2:
            assert not read, "round 2 was to read no key sets"
            # Landed by the round that read no key sets; now deleted from the source, or updated.
            assert query(warehouse_url, "SELECT count(*) FROM dim_design WHERE design_id = ANY(:ids)",
                         ids=[ids["design"], ids["updated"]]) == [[2]]
            assert query(warehouse_url, "SELECT count(*) FROM fact_sales_order WHERE sales_order_id = :id",
                         id=ids["order"]) == [[1]]
            query(totesys_url, "DELETE FROM design WHERE design_id = :id", id=ids["design"])
            query(totesys_url, "DELETE FROM sales_order WHERE sales_order_id = :id", id=ids["order"])
            query(totesys_url, "UPDATE design SET design_name = 'updated', last_updated = localtimestamp "
                               "WHERE design_id = :id", id=ids["updated"])
        elif rounds == 3:
            assert not read
            # The state as the code before keys_read wrote it: the next round reads the key sets.
            written = state()
            del written["keys_read"]
            s3.put_object(Bucket=buckets["ingest"], Key="_state/ingest.json",
                          Body=json.dumps(written).encode())
        elif rounds == 4:
            assert read
            assert state()["held_deletes"] == held
            assert query(warehouse_url, "SELECT source_table, source_id FROM etl_deleted_rows") == \
                [["sales_order", ids["order"]]]
            ids["alerts"] = held_alerts()
        elif rounds == 5:
            assert not read and held_alerts() == ids["alerts"] + 1, "a round that skips the keys alerts too"
            assert state()["held_deletes"] == held

    def crash(*args, **kwargs):
        raise RuntimeError("killed before the state pointer advanced")

    rounds, reads = 0, []
    while True:
        rounds += 1
        assert rounds < 50, "never caught up"
        before = state().get("keys_read") if rounds > 1 else None
        keys_before = state()["tables"]["design"]["keys"] if rounds > 1 else None
        event = {6: {"approve_deletes": ["design"]}, 7: {"resync": ["design"]}}.get(rounds, {})
        if rounds == 2:
            # Killed once after landing its rows and the grown key sets, before its state advanced: they
            # are orphans, and the retry lands and adds the same again.
            with monkeypatch.context() as patched, pytest.raises(RuntimeError):
                patched.setattr(ingest_run, "write_ingest_state", crash)
                ingest.lambda_handler({}, None)
            assert state()["tables"]["design"]["keys"] == keys_before
            assert s3.list_objects_v2(Bucket=buckets["ingest"], Prefix="_keys/design/")["KeyCount"] == 2
        transformed = transform.lambda_handler(ingest.lambda_handler(event, None), None)
        reads.append(state()["keys_read"] != before)
        assert load.lambda_handler(transformed, None)["rejected_rows"] == 0
        if not transformed.get("more_waiting"):
            break
        between(rounds, reads[-1])
    assert rounds > 7 and reads[:7] == [True, False, False, True, False, True, True] and reads[-1], reads
    assert state()["held_deletes"] == {}
    assert sorted(query(warehouse_url, "SELECT source_table, source_id, reinserted_batch_id "
                                       "FROM etl_deleted_rows")) == \
        [["design", ids["design"], None], ["sales_order", ids["order"], None]]
    assert query(warehouse_url, "SELECT dimension_id FROM deleted_dimension_rows") == [[ids["design"]]]
    assert query(warehouse_url, "SELECT design_name FROM dim_design WHERE design_id = :id",
                 id=ids["updated"]) == [["updated"]]
    # Every source version one fact row; the deleted order's and the re-inserted payment's first kept.
    stamp = query(warehouse_url, "SELECT last_updated_date + last_updated_time FROM fact_sales_order "
                                 "WHERE sales_order_id = :id", id=ids["order"])[0][0]
    known = {"sales_order": {(ids["order"], stamp)}, "payment": {tuple(paid)}}
    for table, fact in FACTS.items():
        known.setdefault(table, set()).update(
            versions(totesys_url, f"SELECT {table}_id, last_updated FROM {table}"))  # nosec B608
        assert versions(warehouse_url, f"SELECT {table}_id, last_updated_date + last_updated_time "
                                       f"FROM {fact}") == sorted(known[table]), fact  # nosec B608
    assert query(warehouse_url, "SELECT count(*) FROM current_sales_order WHERE sales_order_id = :id",
                 id=ids["order"]) == [[0]]
    assert query(warehouse_url, "SELECT count(*) FROM etl_rejected_rows") == [[0]]
