"""Guarded mass deletes: a truncated source table disappears from nothing until the deletion is approved."""
import boto3
import pytest

import ingest

from tests.support.db import run_sql
from tests.support.pipeline import run_pipeline
from utils.aws.state import read_state
from utils.config import load_settings
from utils.errors import ConfigError, InvalidEventError
from utils.ingest.delete_guard import is_mass_delete


def current_payments(warehouse):
    return run_sql(warehouse, "SELECT payment_id FROM current_payment ORDER BY 1")


def held(buckets):
    return read_state(boto3.client("s3"), buckets["ingest"], "ingest")[0].get("held_deletes")


@pytest.mark.slow
def test_a_truncated_table_stays_until_approved_while_other_changes_flow(loaded, check):
    source, warehouse, buckets = loaded
    before = current_payments(warehouse)
    assert before == [[1]]
    run_sql(source, "TRUNCATE payment")
    run_sql(source, "UPDATE sales_order SET units_sold = 42, last_updated = localtimestamp WHERE "
                    "sales_order_id = 1")

    result = run_pipeline()

    # The order's change flowed; the payment did not disappear; nothing recorded; the hold is named.
    assert run_sql(warehouse, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 1") == [[42]]
    assert current_payments(warehouse) == before
    assert run_sql(warehouse, "SELECT count(*) FROM etl_deleted_rows") == [[0]]
    assert "deleted_rows" not in result
    assert held(buckets) == {"payment": {"rows": 1, "table_rows": 1}}
    # verify names it: in the warehouse, gone from totesys, no deletion recorded.
    report = check(source, warehouse, buckets["ingest"])
    payment = {t.table: t for t in report.tables}["fact_payment"]
    assert payment.ids["extra"] == [1] and payment.deletions_held == 1

    # Later runs hold it again: still nothing disappears.
    run_pipeline()
    assert current_payments(warehouse) == before
    assert held(buckets) == {"payment": {"rows": 1, "table_rows": 1}}

    approved = run_pipeline({"approve_deletes": ["payment"]})

    assert approved["deleted"] == {"payment": 1}
    assert current_payments(warehouse) == []
    assert run_sql(warehouse, "SELECT source_table, source_id FROM etl_deleted_rows") == [["payment", 1]]
    assert held(buckets) == {}
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0
    # Approved once: the next run detects nothing more.
    assert run_pipeline()["batches"] == []


@pytest.mark.slow
def test_more_than_the_fraction_is_held_less_is_recorded_and_ids_new_meanwhile_are_tracked(
        loaded, monkeypatch):
    source, warehouse, buckets = loaded
    run_sql(source, "INSERT INTO design (created_at, design_name, file_location, file_name, last_updated) "
                    "SELECT localtimestamp, 'D' || n, '/d', 'd.json', localtimestamp FROM "
                    "generate_series(2, 10) n")
    run_pipeline()
    designs = [row[0] for row in run_sql(source, "SELECT design_id FROM design WHERE design_id > "
                                                 "1 ORDER BY 1")]

    # 3 of 10 is above 0.25: held.
    run_sql(source, "DELETE FROM design WHERE design_id = ANY(CAST(:ids AS int[]))", ids=designs[:3])
    run_pipeline()
    assert held(buckets) == {"design": {"rows": 3, "table_rows": 10}}
    assert run_sql(warehouse, "SELECT count(*) FROM deleted_dimension_rows") == [[0]]

    # A design created and deleted while the others are held is still detected, and held with them.
    run_sql(source, "INSERT INTO design (created_at, design_name, file_location, file_name, last_updated) "
                    "VALUES (localtimestamp, 'New', '/d', 'n.json', localtimestamp)")
    run_pipeline()
    new = run_sql(source, "SELECT max(design_id) FROM design")[0][0]
    run_sql(source, "DELETE FROM design WHERE design_id = :i", i=new)
    run_pipeline()
    assert held(buckets) == {"design": {"rows": 4, "table_rows": 11}}

    # With a higher threshold the same deletions go through on their own.
    monkeypatch.setenv("MAX_DELETE_FRACTION", "0.5")
    result = run_pipeline()
    assert result["deleted"] == {"design": 4} and held(buckets) == {}
    assert sorted(r[0] for r in run_sql(warehouse, "SELECT dimension_id FROM deleted_dimension_rows")) \
        == designs[:3] + [new]


def test_the_rule():
    assert not is_mass_delete(25, 100, 0.25) and is_mass_delete(26, 100, 0.25)
    assert is_mass_delete(1, 1, 1.0)  # a table emptied always counts
    assert not is_mass_delete(0, 0, 0.25) and not is_mass_delete(0, 10, 0.25)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "a quarter"])
def test_a_bad_max_delete_fraction_is_refused(buckets, monkeypatch, value):
    monkeypatch.setenv("MAX_DELETE_FRACTION", value)
    with pytest.raises(ConfigError, match="MAX_DELETE_FRACTION"):
        load_settings()


@pytest.mark.parametrize("event", [{"approve_deletes": []}, {"approve_deletes": "payment"}])
def test_a_bad_approval_is_refused(env, event):
    s3, bucket, _ = env
    with pytest.raises(InvalidEventError):
        ingest.lambda_handler(event, None)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
