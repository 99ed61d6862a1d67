"""Time is the source's time (SPEC 4.9): a totesys whose database time zone is not UTC, a zone change
between runs, and a daylight-saving fall-back, against a real PostgreSQL.

Writers connect as the application does (``connect_to_db(timezone=None)``: the database's configured
zone) and stamp ``last_updated`` with ``now()`` or ``localtimestamp``, i.e. the source's wall clock.
"""
import json
import time
from datetime import datetime, timedelta

import pytest

import ingest
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.errors import ConfigError
from utils.format_time import parse_time
from utils.ingest.zones import offsets_over
from utils.aws.state import read_state
from tests.support.ingest import assert_each_version_landed_once, read_table
from utils.aws.objects import list_keys, read_json
from tests.support.db import run_sql
from tests.support.zones import set_database_timezone, write, writer
from tests.support.ingest_mode import cdc_session


def updated_rows(s3, bucket, result, table, pk):
    """{primary key: last_updated} of the landed file of ``table`` in a run's ``result``."""
    landed = read_table(s3, bucket, result[table])
    return dict(zip(landed[pk].to_pylist(), landed["last_updated"].to_pylist()))


def test_connect_to_db_keeps_the_database_zone_only_when_asked(new_database):
    url = new_database()
    set_database_timezone(url, "Asia/Tokyo")
    assert run_sql(url, "SELECT current_setting('TimeZone')") == [["UTC"]]
    assert write(url, "SELECT current_setting('TimeZone')") == [["Asia/Tokyo"]]


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_changes_stamped_in_the_source_zone_are_landed_by_the_next_run_exactly_once(env, zone):
    s3, bucket, url = env
    set_database_timezone(url, zone)
    first = ingest.lambda_handler({}, None)
    assert "sales_order" in first
    write(url, "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() "
               "WHERE sales_order_id = 1")
    write(url, "UPDATE payment SET paid = true, last_updated = localtimestamp WHERE payment_id = 1")
    wall_now = write(url, "SELECT localtimestamp")[0][0]

    second = ingest.lambda_handler({}, None)
    assert sorted(second) == ["payment", "sales_order"]
    assert list(updated_rows(s3, bucket, second, "sales_order", "sales_order_id")) == [1]
    assert list(updated_rows(s3, bucket, second, "payment", "payment_id")) == [1]
    assert ingest.lambda_handler({}, None) == {}
    assert_each_version_landed_once(s3, bucket, url, superseded=2)

    state, _ = read_state(s3, bucket, "ingest")
    manifest = read_json(s3, bucket, state["manifest_key"])
    assert state["timezone"] == manifest["timezone"] == zone
    # Bounds are source wall-clock times, the batch time stays UTC (keys, batch ids).
    high = parse_time(manifest["tables"]["sales_order"]["high"])
    assert abs(high - wall_now) < timedelta(minutes=5)
    utc_now = run_sql(url, "SELECT now() AT TIME ZONE 'UTC'")[0][0]
    assert abs(parse_time(manifest["batch_time"]) - utc_now) < timedelta(minutes=5)


@pytest.mark.parametrize("legacy_state", [False, True])
def test_a_zone_change_between_runs_converts_the_bounds_once_and_loses_nothing(env, ingest_log,
                                                                               legacy_state):
    s3, bucket, url = env
    ingest.lambda_handler({}, None)  # database zone: UTC
    state, etag = read_state(s3, bucket, "ingest")
    assert state["timezone"] == "UTC"
    if legacy_state:  # a state pointer written before zones were recorded: its bounds are UTC
        del state["timezone"], state["clock"]
        for entry in state["tables"].values():
            del entry["utc"], entry["offsets"]
        s3.put_object(Bucket=bucket, Key="_state/ingest.json", Body=json.dumps(state))
    utc_high = parse_time(state["tables"]["address"]["high"])
    set_database_timezone(url, "Asia/Tokyo")
    write(url, "UPDATE address SET city = 'Kyoto', last_updated = now() WHERE address_id = 2")
    ingest_log.clear()

    second = ingest.lambda_handler({}, None)
    assert list(second) == ["address"]
    assert list(updated_rows(s3, bucket, second, "address", "address_id")) == [2]
    warnings = [line for level, line in ingest_log if level == "WARNING" and "time zone changed" in line]
    assert len(warnings) == 1 and '"old_timezone":"UTC"' in warnings[0] and "Asia/Tokyo" in warnings[0]
    state, _ = read_state(s3, bucket, "ingest")
    assert state["timezone"] == "Asia/Tokyo"
    low = parse_time(read_json(s3, bucket, state["manifest_key"])["tables"]["address"]["low"])
    cursor = not cdc_session()  # CDC (make test-cdc) reads the slot: no window starts below the bound
    if cursor and legacy_state:  # as before: the previous bound converted into Tokyo time (+9 h) - overlap
        assert low == utc_high + timedelta(hours=9) - timedelta(hours=1)
    elif cursor:  # the previous bound as stamped (UTC, the smaller offset in play), minus the overlap
        assert low == utc_high - timedelta(hours=1)
    assert state["tables"]["address"]["offsets"] == [0, 9 * 3600]
    assert ingest.lambda_handler({}, None) == {}
    assert_each_version_landed_once(s3, bucket, url, superseded=1)


@pytest.mark.cursor_only("a subset run (tables_to_query) and the cursor's bounds; CDC reads every table")
def test_a_subset_run_after_a_zone_change_converts_only_the_bounds_of_a_legacy_state(env):
    s3, bucket, _ = env
    ingest.lambda_handler({}, None)
    before = read_state(s3, bucket, "ingest")[0]["tables"]
    set_database_timezone(env[2], "Asia/Tokyo")
    ingest.lambda_handler({"tables_to_query": ["currency"]}, None)
    after = read_state(s3, bucket, "ingest")[0]["tables"]
    assert after["payment"] == before["payment"]  # raw bounds: never converted

    state, _ = read_state(s3, bucket, "ingest")
    for entry in state["tables"].values():  # a state written before utc and offsets were recorded
        del entry["utc"], entry["offsets"]
    state["timezone"] = "UTC"
    del state["clock"]
    s3.put_object(Bucket=bucket, Key="_state/ingest.json", Body=json.dumps(state))
    set_database_timezone(env[2], "Asia/Kolkata")
    ingest.lambda_handler({"tables_to_query": ["currency"]}, None)
    after = read_state(s3, bucket, "ingest")[0]["tables"]
    converted = parse_time(before["payment"]["high"]) + timedelta(hours=5, minutes=30)
    assert parse_time(after["payment"]["high"]) == converted
    assert "utc" not in after["payment"] and after["currency"]["offsets"] == [0, 5 * 3600 + 1800]


def test_a_zone_change_forward_keeps_the_rows_written_before_it_in_the_old_zone(env):
    """Docs/RELIABILITY.md defect 1: rows stamped in UTC after a run, then the zone moved to Asia/Kolkata
    (+5:30): they lie 4:30 below the previous bound converted into Kolkata time minus the overlap. The
    window starts from the previous bound in UTC (the smaller offset in play) instead: they land, once;
    so do the rows stamped in Kolkata time, and one more run later the window is back to one overlap."""
    s3, bucket, url = env
    ingest.lambda_handler({}, None)
    write(url, "UPDATE address SET city = 'Leeds', last_updated = now() WHERE address_id = 2")
    write(url, "UPDATE payment SET paid = true, last_updated = now() WHERE payment_id = 1")
    set_database_timezone(url, "Asia/Kolkata")
    write(url, "UPDATE sales_order SET units_sold = 9, last_updated = now() WHERE sales_order_id = 1")

    second = ingest.lambda_handler({}, None)
    assert sorted(second) == ["address", "payment", "sales_order"]
    assert list(updated_rows(s3, bucket, second, "address", "address_id")) == [2]
    assert list(updated_rows(s3, bucket, second, "payment", "payment_id")) == [1]
    assert ingest.lambda_handler({}, None) == {}
    assert_each_version_landed_once(s3, bucket, url, superseded=3)
    state, _ = read_state(s3, bucket, "ingest")
    assert state["tables"]["payment"]["offsets"] == [5 * 3600 + 1800]  # UTC forgotten once past
    write(url, "UPDATE payment SET paid = false, last_updated = now() WHERE payment_id = 1")
    third = ingest.lambda_handler({}, None)
    assert list(updated_rows(s3, bucket, third, "payment", "payment_id")) == [1]
    manifest = read_json(s3, bucket, read_state(s3, bucket, "ingest")[0]["manifest_key"])
    bounds = manifest["tables"]["payment"]
    assert parse_time(bounds["high"]) - parse_time(bounds["low"]) < timedelta(hours=2)


@pytest.mark.parametrize("writer_zone", ["Asia/Tokyo", "UTC"])
def test_rows_stamped_before_a_zone_change_backwards_are_neither_held_nor_future(env, writer_zone):
    """Docs/RELIABILITY.md defects 2 and 6: the source in Asia/Tokyo, a run; rows stamped in Tokyo time
    after it (by the database's zone, or by a session opened before the change), then the zone moved
    back to UTC: the rows are 9 hours ahead of the UTC clock. They land with the next run as ordinary
    rows (the largest offset in play is Tokyo's), not held for 9 hours and not quarantined as future."""
    s3, bucket, url = env
    set_database_timezone(url, "Asia/Tokyo")
    ingest.lambda_handler({}, None)
    old_session = writer(url)
    try:
        if writer_zone == "UTC":
            set_database_timezone(url, "UTC")
        old_session.run("UPDATE payment SET paid = true, last_updated = now() WHERE payment_id = 1")
        set_database_timezone(url, "UTC")
    finally:
        close_db_connection(old_session)
    write(url, "UPDATE sales_order SET units_sold = 9, last_updated = now() WHERE sales_order_id = 1")

    second = ingest.lambda_handler({}, None)
    assert sorted(second) == ["payment", "sales_order"]
    stamped = updated_rows(s3, bucket, second, "payment", "payment_id")[1]
    manifest = read_json(s3, bucket, read_state(s3, bucket, "ingest")[0]["manifest_key"])
    assert stamped < parse_time(manifest["tables"]["payment"]["high"])
    assert parse_time(manifest["tables"]["payment"]["future_from"]) > stamped  # not a future row
    assert ingest.lambda_handler({}, None) == {}
    assert_each_version_landed_once(s3, bucket, url, superseded=2)


def test_an_overlap_shorter_than_the_daylight_saving_shift_is_refused(env, monkeypatch):
    s3, bucket, url = env
    set_database_timezone(url, "America/New_York")
    monkeypatch.setenv("INGEST_OVERLAP_SECONDS", "1800")
    with pytest.raises(ConfigError, match=r"INGEST_OVERLAP_SECONDS=1800 is below the daylight-saving shift "
                                          r"of the source time zone 'America/New_York' \(3600 s\)"):
        ingest.lambda_handler({}, None)
    assert list_keys(s3, bucket) == []
    monkeypatch.setenv("INGEST_OVERLAP_SECONDS", "3600")
    assert ingest.lambda_handler({}, None)


def fall_back_soon(url, seconds):
    """A POSIX zone (standard UTC-5, daylight UTC-4) whose daylight time began on January 1 and ends
    ``seconds`` from now (database clock): its wall clock then goes back one hour."""
    utc_now = run_sql(url, "SELECT now() AT TIME ZONE 'UTC'")[0][0]
    end = (utc_now + timedelta(seconds=seconds) - timedelta(hours=4)).replace(microsecond=0)
    day = end.timetuple().tm_yday
    if end.month > 2 and (end.year % 4 == 0 and (end.year % 100 or end.year % 400 == 0)):
        day -= 1  # Jn counts 1-365 and never February 29
    return f"XST5XDT,J1/0,J{day}/{end:%H:%M:%S}"


def wait_for_wall_clock_before(url, moment, timeout=30):
    """Poll until the source's wall clock (in its configured zone) reads earlier than ``moment``."""
    deadline = time.monotonic() + timeout
    while write(url, "SELECT localtimestamp")[0][0] >= moment:
        assert time.monotonic() < deadline, f"the source wall clock never went back before {moment}"
        time.sleep(0.2)


@pytest.mark.slow
def test_the_daylight_saving_fall_back_loses_and_duplicates_nothing(env):
    s3, bucket, url = env
    set_database_timezone(url, fall_back_soon(url, seconds=6))
    if cdc_session():  # CDC's first run creates its slot, which waits for every open transaction
        ingest.lambda_handler({}, None)
    late = writer(url)
    try:
        # Written in daylight time, committed only after the first run's snapshot: a late commit.
        late.run("BEGIN")
        late.run("UPDATE sales_order SET units_sold = 7, last_updated = now() WHERE sales_order_id = 1")
        ingest.lambda_handler({}, None)
        late.run("COMMIT")
    finally:
        close_db_connection(late)
    first = read_json(s3, bucket, read_state(s3, bucket, "ingest")[0]["manifest_key"])
    first_high = parse_time(first["tables"]["sales_order"]["high"])
    assert parse_time(first["batch_time"]) - first_high == timedelta(hours=4), \
        "the first run must take its snapshot before the fall-back (the machine was too slow)"

    wait_for_wall_clock_before(url, first_high)
    # Stamped in the repeated hour: up to an hour earlier than the previous run's bound.
    write(url, "UPDATE sales_order SET units_sold = 8, last_updated = now() WHERE sales_order_id = 2")
    write(url, "UPDATE payment SET paid = true, last_updated = localtimestamp WHERE payment_id = 1")
    stamped = write(url, "SELECT last_updated FROM sales_order WHERE sales_order_id = 2")[0][0]
    assert stamped < first_high

    second = ingest.lambda_handler({}, None)
    assert sorted(second) == ["payment", "sales_order"]
    assert sorted(updated_rows(s3, bucket, second, "sales_order", "sales_order_id")) == [1, 2]
    assert ingest.lambda_handler({}, None) == {}
    state, _ = read_state(s3, bucket, "ingest")
    # Never moved back (while daylight time is in play it follows the daylight clock: utils.ingest.zones).
    assert parse_time(state["tables"]["sales_order"]["high"]) >= first_high
    assert_each_version_landed_once(s3, bucket, url, superseded=3)


def test_a_late_commit_of_the_old_zone_open_over_two_runs_after_a_zone_change_arrives(env):
    """A transaction opened in UTC after a run stays open while the zone moves forward to Asia/Kolkata and
    two runs pass: UTC stays among the offsets recorded while a transaction older than the previous
    snapshot is open, so its rows, stamped in UTC, are still inside the window when it commits."""
    s3, bucket, url = env
    ingest.lambda_handler({}, None)
    late = writer(url)
    try:
        late.run("BEGIN")
        late.run("UPDATE payment SET paid = true, last_updated = now() WHERE payment_id = 1")
        set_database_timezone(url, "Asia/Kolkata")
        assert ingest.lambda_handler({}, None) == {}
        assert ingest.lambda_handler({}, None) == {}
        late.run("COMMIT")
    finally:
        close_db_connection(late)
    assert list(updated_rows(s3, bucket, ingest.lambda_handler({}, None), "payment", "payment_id")) == [1]
    assert ingest.lambda_handler({}, None) == {}
    assert_each_version_landed_once(s3, bucket, url, superseded=1)


def test_the_offsets_of_a_zone_over_an_interval_are_the_servers(new_database):
    """``offsets_over`` asks the server: a POSIX zone's daylight and standard offsets when the interval
    spans its fall-back, one of them otherwise; several zones at once; a long interval sampled."""
    conn = connect_to_db(credentials=credentials_from_url(new_database()))
    try:
        zone = "XST5XDT,J1/0,J200/12:00:00"  # daylight (UTC-4) ends at noon, July 19 (UTC 16:00)
        fall_back = datetime(2026, 7, 19, 16, 0)
        assert offsets_over(conn, [zone], fall_back - timedelta(hours=2), fall_back - timedelta(seconds=1)) \
            == {-4 * 3600}
        assert offsets_over(conn, [zone], fall_back - timedelta(hours=1), fall_back + timedelta(minutes=1)) \
            == {-4 * 3600, -5 * 3600}
        assert offsets_over(conn, [zone, "Asia/Kolkata", "UTC"], fall_back, fall_back + timedelta(hours=3)) \
            == {-5 * 3600, 5 * 3600 + 1800, 0}
        assert offsets_over(conn, ["Europe/London"], datetime(2020, 1, 1), datetime(2026, 1, 1)) == {0, 3600}
    finally:
        close_db_connection(conn)
