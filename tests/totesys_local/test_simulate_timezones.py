"""`totesys simulate` on a source whose clock is not in UTC: its rows carry the source's own wall time
(SPEC 4.9), so the ingest's windows, taken on the same clock and zone, see them."""
import datetime as dt

import pytest
from pg8000.native import identifier

from tests.support.db import run_sql
from totesys_local.generator import simulate
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url


def _source_now(url):
    """LOCALTIMESTAMP in a session with the database's own zone (as the ingest reads it)."""
    conn = connect_to_db(credentials=credentials_from_url(url), timezone=None)
    try:
        return conn.run("SELECT LOCALTIMESTAMP")[0][0]
    finally:
        close_db_connection(conn)


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_simulate_stamps_rows_with_the_source_clock_in_its_zone(totesys_url, zone):
    name = credentials_from_url(totesys_url)["database"]
    run_sql(totesys_url, f"ALTER DATABASE {identifier(name)} SET timezone = {identifier(zone)}")
    newest = run_sql(totesys_url, "SELECT max(sales_order_id) FROM sales_order")[0][0]
    before = _source_now(totesys_url)
    simulate(totesys_url, minutes=10, seed=5)
    after = _source_now(totesys_url)
    stamps = [row[0] for row in run_sql(
        totesys_url, "SELECT last_updated FROM sales_order WHERE sales_order_id > :old", old=newest)]
    assert stamps
    # The simulated minutes end at the transaction's start on the source clock: within [before - 10 s,
    # after] in the source's zone (in UTC they would be 5 h ahead in New York, 9 h behind in Tokyo).
    assert all(before - dt.timedelta(seconds=11) <= stamp <= after for stamp in stamps), (before, stamps)
