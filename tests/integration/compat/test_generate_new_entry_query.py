"""generate_new_entry_query: start inclusive, end exclusive, times bound, names allow-listed."""
from utils.compat import generate_new_entry_query, query_db
from tests.support.db import connect
from tests.support.totesys import FILL_SQL, SCHEMA_SQL
from tests.support.db import run_sql


def test_query_selects_the_half_open_range(new_database):
    url = new_database()
    run_sql(url, SCHEMA_SQL)
    run_sql(url, FILL_SQL)
    run_sql(url, "UPDATE currency SET last_updated = '2024-01-01 10:00:00' WHERE currency_id = 1")
    run_sql(url, "UPDATE currency SET last_updated = '2024-01-01 11:00:00' WHERE currency_id = 2")
    sql = generate_new_entry_query("currency", "2024-01-01 10:00:00.000000", "2024-01-01 11:00:00.000000")
    assert "2024" not in sql  # the times are bound parameters, not text in the query
    result = query_db(sql, lambda: connect(url), lambda conn: conn.close(),
                      start_time="2024-01-01 10:00:00.000000", end_time="2024-01-01 11:00:00.000000")
    assert [row["currency_id"] for row in result["response"]] == [1]
    assert list(result["response"][0]) == ["currency_id", "currency_code", "created_at", "last_updated"]
