"""Which backfill rounds may go without reading the key sets (utils.ingest.run._key_sets_due), and what a
round that does not carries (utils.ingest.deletes.carried_detection: docs/RELIABILITY.md defect 18)."""
from datetime import datetime, timedelta

import numpy as np
import pytest

import utils.ingest.deletes as deletes
from utils.format_time import format_time
from utils.ingest.repair import RepairOptions
from utils.ingest.run import KEY_SETS_MAX_AGE_SECONDS, IngestOptions, _key_sets_due, keys_read_after
from utils.ingest.snapshot import Window

NOW = datetime(2026, 12, 3, 17, 0, 0)
TABLES = ["design", "payment"]
KEYED = {table: {"high": "2026-12-03T16:00:00", "keys": f"_keys/{table}/x.parquet"} for table in TABLES}


def due(read_ago=60.0, more_waiting=True, prev_tables=None, **options):
    window = Window(NOW, "UTC", "1:1:", {}, KEYED if prev_tables is None else prev_tables, 0, {},
                    more_waiting=more_waiting)
    state = {} if read_ago is None else {"keys_read": format_time(NOW - timedelta(seconds=read_ago))}
    return _key_sets_due(window, state, TABLES, IngestOptions(0, 10, **options))


def test_an_intermediate_round_with_recent_key_sets_skips_them():
    assert due() is False
    assert due(read_ago=KEY_SETS_MAX_AGE_SECONDS) is False


@pytest.mark.parametrize("case", [
    {"more_waiting": False},  # the backfill's last round
    {"read_ago": KEY_SETS_MAX_AGE_SECONDS + 0.001},  # too old
    {"read_ago": 10 * 365 * 86400},  # the clock jumped forward
    {"read_ago": -1},  # the clock went back
    {"read_ago": None},  # a state written before keys_read
    {"prev_tables": {"design": KEYED["design"]}},  # a table with no key set yet
    {"prev_tables": {"design": KEYED["design"], "payment": {"high": "2026-12-03T16:00:00"}}},
    {"fresh": True},
    {"repair": RepairOptions(resync=("design",))},
    {"repair": RepairOptions(approved=("payment",))},
])
def test_every_other_round_reads_them(case):
    assert due(**case) is True


def test_a_round_without_key_sets_adds_the_ids_it_landed_to_the_carried_set(monkeypatch):
    stored = {"_keys/design/old": np.array([2, 3, 5, 9], dtype=np.int32),
              "_keys/payment/old": np.array([1, 2], dtype=np.int32),
              "_keys/staff/old": np.array([], dtype=np.int32)}
    written = {}

    def write(s3_client, bucket, table, batch_time, keys):
        written[table] = keys
        return f"_keys/{table}/new"

    monkeypatch.setattr(deletes, "read_previous_keys", lambda s3, bucket, table, key: stored[key])
    monkeypatch.setattr(deletes, "write_key_set", write)
    state = {"tables": {table: {"keys": f"_keys/{table}/old"} for table in ("design", "payment", "staff")},
             "held_deletes": {"payment": {"rows": 1, "table_rows": 2},
                              "currency": {"rows": 1, "table_rows": 1}}}
    landed = {"design": np.array([10, 3, 4, 1], dtype=np.int32), "payment": np.array([2, 1], dtype=np.int32),
              "staff": np.array([7], dtype=np.int32)}
    detection = deletes.carried_detection(None, "bucket", NOW, state, ["design", "payment", "staff"], landed)
    assert detection.keys == {"design": "_keys/design/new", "payment": "_keys/payment/old",
                              "staff": "_keys/staff/new"}
    assert written["design"].tolist() == [1, 2, 3, 4, 5, 9, 10] and written["design"].dtype == np.int32
    assert written["staff"].tolist() == [7] and "payment" not in written
    assert detection.held == {"payment": {"rows": 1, "table_rows": 2}} and not detection.deleted


def test_keys_read_is_the_time_of_the_oldest_key_set_the_state_names():
    earlier = format_time(NOW - timedelta(seconds=KEY_SETS_MAX_AGE_SECONDS * 4))
    state = {"tables": KEYED, "keys_read": earlier}
    assert keys_read_after(state, TABLES, NOW) == format_time(NOW)
    assert keys_read_after({}, TABLES, NOW) == format_time(NOW)  # a first run
    assert keys_read_after(state, TABLES, None) == earlier  # a round that read none
    # tables_to_query: the design's set is new, the payment's is as old as before.
    assert keys_read_after(state, ["design"], NOW) == earlier
    assert keys_read_after({"tables": KEYED}, ["design"], NOW) is None
