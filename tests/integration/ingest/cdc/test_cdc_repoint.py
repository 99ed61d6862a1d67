"""A deliberate re-point in CDC mode (``repoint_source``): the previous source's slot on the same server is
dropped (it would block the new source's slot, a name being per server, and keep WAL for nothing) and the
new source is snapshotted; a slot still in use is refused in one line with nothing landed; a previous
source on another server is named in a WARNING (its slot is out of reach). Real PostgreSQL, moto."""
import json
import subprocess  # nosec B404: pg_recvlogical, a real client holding the slot
import time
from pathlib import Path

import pytest

import ingest
from tests.support.cdc import slot_row
from tests.support.db import run_sql
from totesys_local.aws_emulation import put_credentials_secret
from totesys_local.cluster import find_bindir
from utils.aws.state import read_state, write_state
from utils.errors import ConfigError

pytestmark = pytest.mark.slow


def database_of(url):
    return url.rsplit("/", 1)[1]


def warnings_with(ingest_log, text):
    return [json.loads(line) for level, line in ingest_log if level == "WARNING" and text in line]


def test_a_repoint_drops_the_previous_sources_slot_and_snapshots_the_new_one(
        env, cdc_mode, other_source, ingest_log):
    s3, bucket, url = env
    slot = cdc_mode
    ingest.lambda_handler({}, None)
    assert slot_row(url, slot) is not None
    put_credentials_secret("test/totesys", other_source)

    ingest.lambda_handler({"repoint_source": True}, None)
    state, _ = read_state(s3, bucket, "ingest")
    assert state["source"]["database"] == database_of(other_source) and state["cdc"]["slot"] == slot
    database = run_sql(other_source, "SELECT database::text FROM pg_replication_slots "
                                     "WHERE slot_name = :s", s=slot)
    assert database == [[database_of(other_source)]]  # the slot is the new source's now
    dropped = warnings_with(ingest_log, "previous source's replication slot dropped")
    assert len(dropped) == 1 and database_of(url) in dropped[0]["previous"]

    run_sql(other_source, "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp "
                          "WHERE payment_id = 1")
    files = ingest.lambda_handler({}, None)  # read from the new slot, not another snapshot
    assert set(files) == {"payment"}
    assert len(warnings_with(ingest_log, "CDC slot lost")) == 0


def test_a_repoint_whose_previous_slot_is_in_use_is_refused_with_nothing_landed(
        env, cdc_mode, other_source, pg_admin_url):
    s3, bucket, url = env
    slot = cdc_mode
    ingest.lambda_handler({}, None)
    before = read_state(s3, bucket, "ingest")[0]
    reader = subprocess.Popen(  # nosec B603: a fixed binary and the test's own URL
        [str(Path(find_bindir()) / "pg_recvlogical"), "-d", url, "--slot", slot, "--start",
         "-f", "/dev/null"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if run_sql(url, "SELECT active FROM pg_replication_slots WHERE slot_name = :s", s=slot)[0][0]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("pg_recvlogical did not take the slot")
        put_credentials_secret("test/totesys", other_source)
        with pytest.raises(ConfigError) as refused:
            ingest.lambda_handler({"repoint_source": True}, None)
    finally:
        reader.terminate()
        reader.wait(timeout=30)
    message = str(refused.value)
    assert "\n" not in message and f"slot {slot} could not be dropped" in message
    assert "totesys cdc drop-slot" in message and database_of(url) in message
    assert read_state(s3, bucket, "ingest")[0] == before  # nothing landed, the state not re-pointed
    assert slot_row(url, slot) is not None


def test_a_repoint_from_another_server_names_the_slot_left_there(env, cdc_mode, other_source, ingest_log):
    s3, bucket, url = env
    slot = cdc_mode
    ingest.lambda_handler({}, None)
    state, etag = read_state(s3, bucket, "ingest")
    # The state as a source on another server left it (its slot is not on this server).
    state["source"] = {"system_identifier": "1", "database": "elsewhere"}
    write_state(s3, bucket, "ingest", state, etag)
    put_credentials_secret("test/totesys", other_source)
    run_sql(url, "SELECT pg_drop_replication_slot(:s)", s=slot)  # this server's slot is not the old one

    ingest.lambda_handler({"repoint_source": True}, None)
    left = warnings_with(ingest_log, "previous source's replication slot is left")
    assert len(left) == 1 and f"--slot {slot}" in left[0]["message"] and "elsewhere" in left[0]["previous"]
    assert slot_row(other_source, slot) is not None


def test_a_slot_of_that_name_in_another_database_not_recorded_as_ours_is_refused_and_kept(
        env, cdc_mode, other_source):
    s3, bucket, url = env
    slot = cdc_mode
    run_sql(other_source, "SELECT pg_create_logical_replication_slot(:s, 'test_decoding')", s=slot)
    for event in ({}, {"repoint_source": True}):  # a re-point does not make another pipeline's slot ours
        with pytest.raises(ConfigError) as refused:
            ingest.lambda_handler(event, None)
        message = str(refused.value)
        assert f"slot {slot} belongs to database {database_of(other_source)}" in message
        assert "CDC_SLOT_NAME" in message and "drop-slot" in message
    assert slot_row(other_source, slot) is not None
    assert read_state(s3, bucket, "ingest")[0] == {}


def test_a_first_snapshot_that_fails_leaves_no_slot_behind(env, cdc_mode, new_database, pg_admin_url):
    s3, bucket, url = env
    slot = cdc_mode
    empty = new_database()  # not a totesys: the snapshot's first read fails
    put_credentials_secret("test/totesys", empty)
    with pytest.raises(Exception):
        ingest.lambda_handler({}, None)
    assert slot_row(empty, slot) is None and read_state(s3, bucket, "ingest")[0] == {}
    put_credentials_secret("test/totesys", url)  # the right source: no slot in the way, no re-point needed
    ingest.lambda_handler({}, None)
    assert read_state(s3, bucket, "ingest")[0]["cdc"]["slot"] == slot and slot_row(url, slot) is not None
