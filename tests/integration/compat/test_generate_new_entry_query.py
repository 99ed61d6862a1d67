"""generate_new_entry_query: start inclusive, end exclusive, times bound, names allow-listed."""
import pytest

from utils.errors import DateFormatError, UnknownTableError
from utils.compat import generate_new_entry_query, query_db
from utils.ingest.snapshot import select_list
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


def test_select_list_is_quoted_in_physical_order():
    assert select_list("design") == ('"design_id", "created_at", "design_name", "file_location", '
                                     '"file_name", "last_updated"')
    assert select_list("transaction").startswith('"transaction_id", "transaction_type"')


@pytest.mark.parametrize("start, end", [
    ("2024-01-01", "2024-01-02 00:00:00"),
    ("2024-01-01 00:00:00", "yesterday"),
    ("2024-01-01 00:00:00'; DROP TABLE staff; --", "2024-01-02 00:00:00"),
    (None, "2024-01-02 00:00:00"),
])
def test_bad_time_formats_raise_date_format_error(start, end):
    with pytest.raises(DateFormatError, match="is not in the format"):
        generate_new_entry_query("staff", start, end)


def test_start_after_end_is_an_error():
    with pytest.raises(DateFormatError, match="is after end_time"):
        generate_new_entry_query("staff", "2024-01-02 00:00:00", "2024-01-01 00:00:00")


@pytest.mark.parametrize("table", ["_prisma_migrations", "staff; DROP TABLE staff", "", None])
def test_unknown_tables_are_rejected(table):
    with pytest.raises(UnknownTableError, match="unknown table"):
        generate_new_entry_query(table, "2024-01-01 00:00:00", "2024-01-02 00:00:00")
