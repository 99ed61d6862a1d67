"""INGEST_MODE=cdc end to end on scale-1 totesys against real PostgreSQL (wal_level = logical) and moto:
the first run snapshots and creates the slot, later runs land the slot's changes and advance it only after
the state pointer; a kill before the advance, a dropped or invalidated slot and a mode switch all leave
the warehouse exact."""
import boto3
import pytest

from tests.support.cdc import assert_warehouse_exact, slot_row
from tests.support.db import run_sql
from tests.support.ingest import landed_versions
from tests.support.pipeline import run_pipeline
from utils.aws.objects import read_json
from utils.aws.state import read_state
from utils.ingest.cdc import run as cdc_run

pytestmark = pytest.mark.slow

CHANGES = [
    "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp WHERE payment_id IN (1, 2, 3)",
    "DELETE FROM payment WHERE payment_id = 10",
    "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = localtimestamp "
    "WHERE sales_order_id = 5",
    "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold, "
    "unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
    "SELECT created_at, localtimestamp, design_id, staff_id, counterparty_id, 7, 2.50, currency_id, "
    "agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id FROM sales_order "
    "WHERE sales_order_id = 1",
    "UPDATE staff SET last_name = 'O''Brien \"x\"', last_updated = localtimestamp WHERE staff_id = 2",
]


@pytest.fixture
def loaded(totesys_url, warehouse_url, pipeline_env, cdc_mode):
    """Scale-1 totesys loaded once in CDC mode (the snapshot run); returns (source, warehouse, slot)."""
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()
    return totesys_url, warehouse_url, cdc_mode


def change_source(source):
    for sql in CHANGES:
        run_sql(source, sql)


def test_first_run_snapshots_changes_land_the_slot_advances_after_the_state_even_across_a_kill(
        loaded, buckets, monkeypatch):
    source, warehouse, slot = loaded
    s3 = boto3.client("s3")
    state, _ = read_state(s3, buckets["ingest"], "ingest")
    assert state["cdc"]["slot"] == slot and slot_row(source, slot) is not None
    assert_warehouse_exact(source, warehouse)
    change_source(source)

    files = cdc_run_once()
    assert set(files) == {"payment", "sales_order", "staff"}
    state, _ = read_state(s3, buckets["ingest"], "ingest")
    manifest = read_json(s3, buckets["ingest"], state["manifest_key"])
    assert manifest["deleted"]["tables"] == {"payment": 1}
    assert {name: entry["rows"] for name, entry in manifest["tables"].items()} == \
        {"payment": 3, "sales_order": 2, "staff": 1}
    assert slot_row(source, slot)[0] == state["cdc"]["lsn"]
    run_pipeline_from(files)
    assert_warehouse_exact(source, warehouse)

    # Nothing new: no file, no manifest; the state and the slot move on together.
    before = state["manifest_key"]
    assert cdc_run_once() == {}
    state, _ = read_state(s3, buckets["ingest"], "ingest")
    assert state["manifest_key"] == before and slot_row(source, slot)[0] == state["cdc"]["lsn"]

    # Killed after the batch and the state pointer landed, before the slot advanced: nothing lands twice.
    run_sql(source, "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp WHERE payment_id = 5")
    run_sql(source, "DELETE FROM payment WHERE payment_id = 11")
    position = slot_row(source, slot)[0]

    def killed(*args):
        raise KeyboardInterrupt("killed before the slot advanced")

    with monkeypatch.context() as patch:
        patch.setattr(cdc_run, "advance_slot", killed)
        with pytest.raises(KeyboardInterrupt):
            cdc_run_once()
    assert slot_row(source, slot)[0] == position  # the slot did not move
    assert read_state(s3, buckets["ingest"], "ingest")[0]["cdc"]["lsn"] != position  # the batch landed
    run_sql(source, "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp WHERE payment_id = 4")

    run_pipeline()  # the killed batch (in the state pointer) and the new change
    assert max(landed_versions(s3, buckets["ingest"]).values()) == 1  # no change was landed twice
    state, _ = read_state(s3, buckets["ingest"], "ingest")
    assert slot_row(source, slot)[0] == state["cdc"]["lsn"]
    assert_warehouse_exact(source, warehouse)


def cdc_run_once():
    import ingest
    return ingest.lambda_handler({}, None)


def run_pipeline_from(files):
    import load
    import transform
    return load.lambda_handler(transform.lambda_handler(files, None), None)
