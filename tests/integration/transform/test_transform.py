"""The transform stage against moto S3, on hand-written ingest batches in the documented format."""
import json

import pyarrow as pa
import pytest

import transform
from utils.transform import run as transform_run
from utils.errors import (CorruptFileError, InvalidEventError, SchemaMismatchError,
                          StateConflictError, UnknownTableError)
from utils.aws.objects import read_parquet_table
from utils.aws.state import read_state
from utils.catalog.warehouse import WAREHOUSE_SCHEMAS
from tests.support.batches import (T0, address, base_batch, later, sales_order, source_table,
                                   write_ingest_batch)
from utils.aws.objects import list_keys


def read_manifest(s3, buckets, key):
    return json.loads(s3.get_object(Bucket=buckets["processed"], Key=key)["Body"].read())


def read_output(s3, buckets, manifest, table):
    return read_parquet_table(s3, buckets["processed"], manifest["tables"][table]["key"], table,
                              WAREHOUSE_SCHEMAS[table])


def test_first_batch_writes_every_table_manifest_snapshots_and_state(s3, buckets):
    ingest_key = write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
    result = transform.lambda_handler({"sales_order": "sales_order/2024/11/25/093015123000.parquet"}, None)
    assert result["batches"] == ["20241125T093015123000"]
    assert result["tables"] == {"dim_date": 5, "dim_staff": 3, "dim_location": 2, "dim_currency": 3,
                                "dim_design": 1, "dim_counterparty": 3, "dim_transaction": 3,
                                "dim_payment_type": 2, "fact_sales_order": 2, "fact_purchase_order": 1,
                                "fact_payment": 3}
    state, _ = read_state(s3, buckets["processed"], "transform")
    assert state == {"manifest_key": "_batches/2024/11/25/093015123000.json",
                     "ingest_manifest_key": ingest_key}
    manifest = read_manifest(s3, buckets, state["manifest_key"])
    assert manifest["prev_manifest_key"] is None
    assert manifest["ingest_manifest_key"] == ingest_key
    assert manifest["tables"]["fact_payment"] == {"key": "fact_payment/2024/11/25/093015123000.parquet",
                                                  "rows": 3}
    assert manifest["snapshots"] == {name: f"_snapshots/{name}/2024/11/25/093015123000.parquet"
                                     for name in ("address", "counterparty", "department", "staff")}
    assert list_keys(s3, buckets["processed"]) == sorted(
        [f"{name}/2024/11/25/093015123000.parquet" for name in WAREHOUSE_SCHEMAS]
        + list(manifest["snapshots"].values()) + [state["manifest_key"], "_state/transform.json"])
    currency = read_output(s3, buckets, manifest, "dim_currency")
    assert currency.column("currency_name").to_pylist() == ["Pound Sterling", "US Dollar",
                                                            "Unknown currency (XQZ)"]


def test_pending_batches_are_processed_oldest_first_with_snapshots_carried(s3, buckets):
    write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
    transform.lambda_handler({}, None)
    second = write_ingest_batch(s3, buckets["ingest"], later(30), {
        "address": [address(1, at=later(20), city="York")]})
    third = write_ingest_batch(s3, buckets["ingest"], later(60), {
        "sales_order": [sales_order(1, at=T0, updated=later(50), units_sold=3)]})
    result = transform.lambda_handler({}, None)
    assert result == {"batches": ["20241125T100015123000", "20241125T103015123000"],
                      "tables": {"dim_location": 1, "dim_counterparty": 2, "fact_sales_order": 1,
                                 "dim_date": 3}}
    state, _ = read_state(s3, buckets["processed"], "transform")
    assert state["ingest_manifest_key"] == third
    last = read_manifest(s3, buckets, state["manifest_key"])
    middle = read_manifest(s3, buckets, last["prev_manifest_key"])
    assert middle["ingest_manifest_key"] == second
    assert middle["snapshots"]["address"] == "_snapshots/address/2024/11/25/100015123000.parquet"
    assert middle["snapshots"]["counterparty"] == "_snapshots/counterparty/2024/11/25/093015123000.parquet"
    assert last["snapshots"] == middle["snapshots"]
    counterparties = read_output(s3, buckets, middle, "dim_counterparty")
    assert counterparties.column("counterparty_legal_city").to_pylist() == ["York", "York"]


def test_no_new_batch_writes_nothing(s3, buckets):
    write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
    transform.lambda_handler({}, None)
    before = list_keys(s3, buckets["processed"])
    assert transform.lambda_handler({}, None) == {"batches": [], "tables": {}}
    assert list_keys(s3, buckets["processed"]) == before


def test_retry_after_a_crash_before_the_state_advanced_completes(s3, buckets, monkeypatch):
    write_ingest_batch(s3, buckets["ingest"], T0, base_batch())

    real_write_state = transform_run.write_transform_state
    crashes = []

    def crash_once(*args, **kwargs):
        if not crashes:
            crashes.append(1)
            raise RuntimeError("killed after the files were written")
        return real_write_state(*args, **kwargs)
    monkeypatch.setattr(transform_run, "write_transform_state", crash_once)
    with pytest.raises(RuntimeError):
        transform.lambda_handler({}, None)
    assert read_state(s3, buckets["processed"], "transform") == ({}, None)
    written = list_keys(s3, buckets["processed"])
    assert "_batches/2024/11/25/093015123000.json" in written
    result = transform.lambda_handler({}, None)
    assert result["batches"] == ["20241125T093015123000"]
    assert read_state(s3, buckets["processed"], "transform")[0]["manifest_key"] \
        == "_batches/2024/11/25/093015123000.json"
    assert list_keys(s3, buckets["processed"]) == sorted(written + ["_state/transform.json"])


def test_a_different_object_already_at_a_key_is_a_conflict(s3, buckets):
    write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
    s3.put_object(Bucket=buckets["processed"], Key="dim_staff/2024/11/25/093015123000.parquet", Body=b"other")
    with pytest.raises(StateConflictError, match="different bytes") as conflict:
        transform.lambda_handler({}, None)
    assert conflict.value.key == "dim_staff/2024/11/25/093015123000.parquet"
    assert read_state(s3, buckets["processed"], "transform") == ({}, None)


@pytest.mark.parametrize("event, error, message", [
    (["sales_order"], InvalidEventError, "transform event must be a JSON object, got list"),
    ("{}", InvalidEventError, "transform event must be a JSON object, got str"),
    ({"sales_orders": "x"}, UnknownTableError, "unknown table 'sales_orders'"),
    ({"sales_order": 3}, InvalidEventError, "transform event: file key of 'sales_order' must be a string"),
])
def test_bad_events_are_rejected_before_anything_is_read(s3, buckets, caplog, event, error, message):
    write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
    with pytest.raises(error) as err:
        transform.lambda_handler(event, None)
    assert str(err.value).startswith(message)
    assert list_keys(s3, buckets["processed"]) == []
    assert [r.levelname for r in caplog.records if r.levelname == "CRITICAL"] == ["CRITICAL"]


def _bad_file_batch(name):
    batch = base_batch()
    if name == "corrupt":
        batch["staff"] = b"this is not parquet"
    elif name == "missing":
        batch["staff"] = source_table("staff", batch["staff"]).drop_columns(["email_address"])
    elif name == "mistyped":
        table = source_table("staff", batch["staff"])
        batch["staff"] = table.set_column(3, "department_id", table["department_id"].cast(pa.int64()))
    return batch


@pytest.mark.parametrize("case, error, message", [
    ("corrupt", CorruptFileError, "staff: s3://totesys-test-ingest/staff/2024/11/25/093015123000.parquet "
                                  "(named by manifest _batches/2024/11/25/093015123000.json) "
                                  "is not a readable Parquet file"),
    ("missing", SchemaMismatchError, "staff: column 'email_address' is missing from "
                                     "s3://totesys-test-ingest/staff/2024/11/25/093015123000.parquet"),
    ("mistyped", SchemaMismatchError, "staff: column 'department_id' in "
                                      "s3://totesys-test-ingest/staff/2024/11/25/093015123000.parquet "
                                      "has type int64, expected int32"),
])
def test_bad_ingest_files_write_nothing(s3, buckets, caplog, case, error, message):
    write_ingest_batch(s3, buckets["ingest"], T0, _bad_file_batch(case))
    with pytest.raises(error) as err:
        transform.lambda_handler({}, None)
    assert str(err.value).startswith(message)
    assert list_keys(s3, buckets["processed"]) == []
    critical = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(critical) == 1 and critical[0].error_type == error.__name__


def test_manifest_naming_an_unknown_table_is_rejected(s3, buckets):
    write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
    state, _ = read_state(s3, buckets["ingest"], "ingest")
    manifest = json.loads(s3.get_object(Bucket=buckets["ingest"], Key=state["manifest_key"])["Body"].read())
    manifest["tables"]["prisma_migrations"] = {"key": "x.parquet", "rows": 1}
    s3.put_object(Bucket=buckets["ingest"], Key=state["manifest_key"], Body=json.dumps(manifest).encode())
    with pytest.raises(UnknownTableError) as err:
        transform.lambda_handler({}, None)
    assert str(err.value).startswith("unknown table 'prisma_migrations'")
    assert list_keys(s3, buckets["processed"]) == []


def test_transform_state_outside_the_ingest_chain_is_corrupt(s3, buckets):
    write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
    s3.put_object(Bucket=buckets["processed"], Key="_state/transform.json",
                  Body=json.dumps({"manifest_key": None,
                                   "ingest_manifest_key": "_batches/nope.json"}).encode())
    with pytest.raises(CorruptFileError) as err:
        transform.lambda_handler({}, None)
    assert str(err.value) == ("ingest batch _batches/nope.json named in _state/transform.json "
                              "is not in the ingest manifest chain")
    assert list_keys(s3, buckets["processed"]) == ["_state/transform.json"]
