"""utils.db.inline: statements sent with their values inlined as literals (one round trip, the simple query
protocol); values come back from the server as they went in, a placeholder inside quotes is text, and a
value the literals cannot carry is refused before anything is sent."""
import pytest

from tests.support.db import connect
from utils.db.connection import close_db_connection
from utils.db.inline import inline, run_inline, sql_literal


@pytest.fixture(scope="module")
def conn(pg_admin_url):
    connection = connect(pg_admin_url)
    yield connection
    close_db_connection(connection)


def test_values_round_trip_through_the_literals(conn):
    row = run_inline(conn, "SELECT :text, :quoted, :none IS NULL, :flag, :number, "
                     "CAST(:ids AS integer[]), CAST(:empty AS integer[]), :text::text || :text",
                     {"text": "batch-1", "quoted": "it's ; -- 'x'", "none": None, "flag": True,
                      "number": 2 ** 40, "ids": [3, 1, 2], "empty": []})
    assert row == [["batch-1", "it's ; -- 'x'", True, True, 2 ** 40, [3, 1, 2], [], "batch-1batch-1"]]


def test_a_placeholder_inside_quotes_is_text(conn):
    sql = "SELECT ' :a ''x :a', :a AS \":a\", to_char(TIMESTAMP '2024-01-02 03:04', 'HH24:MI')"
    expected = "SELECT ' :a ''x :a', 7 AS \":a\", to_char(TIMESTAMP '2024-01-02 03:04', 'HH24:MI')"
    assert inline(sql, {"a": 7}) == expected
    assert run_inline(conn, sql, {"a": 7}) == [[" :a 'x :a", 7, "03:04"]]


def test_a_placeholder_without_a_value_is_refused(conn):
    with pytest.raises(KeyError, match="missing"):
        run_inline(conn, "SELECT :missing", {})


@pytest.mark.parametrize("value, error", [("back\\slash", ValueError), ("nul\0", ValueError),
                                          (1.5, TypeError), ({"a": 1}, TypeError), (["1; DROP"], TypeError),
                                          ([1.5], TypeError), ([True], TypeError)])
def test_values_the_literals_cannot_carry_are_refused(value, error):
    with pytest.raises(error):
        sql_literal(value)
