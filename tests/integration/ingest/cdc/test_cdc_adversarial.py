"""Adversarial cases of INGEST_MODE=cdc against the fixes of defects 1, 2, 3 and 6 (docs/RELIABILITY.md),
each run in both ingest modes: the cursor passes, CDC must too. Scale-1 totesys, real PostgreSQL, moto."""
import time

import pytest

from tests.support.db import run_sql
from tests.support.pipeline import run_pipeline
from tests.support.zones import set_database_timezone, write, writer
from utils.db.connection import close_db_connection

pytestmark = pytest.mark.slow


@pytest.fixture(params=["cursor", "cdc"])
def loaded(request, totesys_url, warehouse_url, pipeline_env, monkeypatch):
    """Scale-1 totesys in Asia/Tokyo, loaded once in the parameter's mode; returns (source, warehouse)."""
    monkeypatch.setenv("INGEST_MODE", request.param)
    monkeypatch.setenv("CDC_SLOT_NAME", f"t_adv_{totesys_url.rsplit('/', 1)[1]}")
    set_database_timezone(totesys_url, "Asia/Tokyo")
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()
    return totesys_url, warehouse_url


def current_amount(warehouse, payment_id):
    return run_sql(warehouse, "SELECT payment_amount::text FROM current_payment WHERE payment_id = :i",
                   i=payment_id)[0][0]


def test_a_row_stamped_in_tokyo_time_then_the_zone_moved_back_to_utc_loads_in_both_modes(
        loaded, monkeypatch):
    """Defect 2 in CDC mode: a payment updated in Asia/Tokyo time some minutes after a run (here more than
    the future tolerance, lowered to 1 s so that the test needs no 5-minute wait), then the zone moved back
    to UTC. The cursor's next run takes it as an ordinary row (Tokyo's offset is in play). A CDC run keeps
    ``high = max(wall clock, previous high)`` (the old Tokyo clock at the previous run), so the row is
    quarantined as a future row; and as CDC reads only changes, it never loads until the row changes
    again (the cursor would at least load it when the clock passes it)."""
    source, warehouse = loaded
    monkeypatch.setenv("INGEST_FUTURE_TOLERANCE_SECONDS", "1")
    time.sleep(2)  # the update is written more than the tolerance after the last run
    write(source, "UPDATE payment SET payment_amount = 111, last_updated = localtimestamp "
                  "WHERE payment_id = 3")
    set_database_timezone(source, "UTC")
    result = run_pipeline()
    assert result["rejected_rows"] == 0
    assert current_amount(warehouse, 3) == "111.00"


def test_a_row_quarantined_as_future_loads_once_the_clock_passes_it_in_both_modes(loaded, monkeypatch):
    """README, "Restores, back-dated and future rows": a row stamped ahead of the source clock by more than
    the tolerance is quarantined, and "a row only slightly ahead that is never corrected loads once the
    clock passes it" (the rejection's reason says so too). The cursor does; CDC reads only changes, so the
    row never comes back, and ``totesys verify`` counts it as quarantined and exits 0 ("every table
    matched") while the warehouse shows the previous version as current."""
    source, warehouse = loaded
    monkeypatch.setenv("INGEST_FUTURE_TOLERANCE_SECONDS", "1")
    write(source, "UPDATE payment SET payment_amount = 222, last_updated = localtimestamp + interval '3 s' "
                  "WHERE payment_id = 4")
    assert run_pipeline()["rejected_rows"] == 1
    time.sleep(4)  # the source clock passes the row's stamp
    run_pipeline()
    assert current_amount(warehouse, 4) == "222.00"


@pytest.mark.parametrize("mode", ["cursor", "cdc"])
def test_a_late_commit_of_the_old_zone_open_over_a_zone_change_arrives_after_switching_to_cursor(
        mode, totesys_url, warehouse_url, pipeline_env, monkeypatch):
    """Defect 1 (late-commit form) across a switch cdc -> cursor: a run in UTC; a transaction opened in
    UTC; the zone moved forward to Asia/Kolkata; a run (in ``mode``) while the transaction is open; the
    commit; the next run in cursor mode. A cursor run spanning the change records both offsets {0, +5:30},
    so the next window starts an hour before the previous snapshot in UTC and takes the late row. A CDC
    run records only the offset it measured (+5:30) and the zone it saw (Kolkata): the cursor's window
    starts 4:30 after the late row's stamp and the row is lost for good (the CDC slot was not read
    again)."""
    monkeypatch.setenv("INGEST_MODE", mode)
    monkeypatch.setenv("CDC_SLOT_NAME", f"t_adv_{totesys_url.rsplit('/', 1)[1]}")
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()
    run_pipeline()  # in CDC mode: the first run was the snapshot, this one reads the slot
    late = writer(totesys_url)
    try:
        late.run("BEGIN")
        late.run("UPDATE payment SET payment_amount = 333, last_updated = now() WHERE payment_id = 5")
        set_database_timezone(totesys_url, "Asia/Kolkata")
        run_pipeline()
        late.run("COMMIT")
    finally:
        close_db_connection(late)
    monkeypatch.setenv("INGEST_MODE", "cursor")
    run_pipeline()
    assert current_amount(warehouse_url, 5) == "333.00"


def test_a_future_row_found_by_the_cdc_snapshot_loads_once_the_clock_passes_it(
        totesys_url, warehouse_url, pipeline_env, monkeypatch):
    """Defect 7 through the snapshot: the first CDC run's snapshot lands a row stamped ahead of the clock
    (quarantined); the next CDC run, after the clock passed the stamp, finds the rows that snapshot landed as
    future rows, re-reads them and loads them."""
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    monkeypatch.setenv("INGEST_MODE", "cdc")
    monkeypatch.setenv("CDC_SLOT_NAME", f"t_advs_{totesys_url.rsplit('/', 1)[1]}")
    monkeypatch.setenv("INGEST_FUTURE_TOLERANCE_SECONDS", "1")
    write(totesys_url, "UPDATE payment SET payment_amount = 333, "
                       "last_updated = localtimestamp + interval '3 s' WHERE payment_id = 5")
    assert run_pipeline()["rejected_rows"] == 1
    time.sleep(4)  # the source clock passes the row's stamp
    run_pipeline()
    assert current_amount(warehouse_url, 5) == "333.00"
