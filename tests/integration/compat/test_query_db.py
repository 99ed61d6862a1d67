"""query_db: rows as dicts, bound parameters, the connection always closed."""
import pytest
from tests.support.db import connect


class Tracked:
    """Wraps the connect/close callables to see that every opened connection is closed."""

    def __init__(self, url):
        self.url, self.opened, self.closed = url, 0, 0

    def connect(self):
        self.opened += 1
        return connect(self.url)

    def close(self, conn):
        self.closed += 1
        conn.close()


def test_rows_as_dicts_with_bound_parameters(pg_admin_url):
    from utils.compat import query_db
    db = Tracked(pg_admin_url)
    result = query_db("SELECT n, n * :k AS twice FROM generate_series(1, 3) AS n", db.connect, db.close,
                      dict_name="numbers", k=2)
    assert result == {"numbers": [{"n": 1, "twice": 2}, {"n": 2, "twice": 4}, {"n": 3, "twice": 6}]}
    assert db.opened == db.closed == 1


def test_empty_dict_name_returns_the_first_row_only(pg_admin_url):
    from utils.compat import query_db
    db = Tracked(pg_admin_url)
    assert query_db("SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, 'y' ORDER BY 1", db.connect, db.close,
                    dict_name="") == {"a": 1, "b": "x"}
    assert query_db("SELECT 1 AS a WHERE false", db.connect, db.close, dict_name="") == {}
    assert query_db("SELECT 1 AS a WHERE false", db.connect, db.close) == {"response": []}


def test_the_connection_is_closed_when_the_query_fails(pg_admin_url):
    import pg8000.exceptions

    from utils.compat import query_db
    db = Tracked(pg_admin_url)
    with pytest.raises(pg8000.exceptions.DatabaseError, match="no_such_table"):
        query_db("SELECT * FROM no_such_table", db.connect, db.close)
    assert db.opened == db.closed == 1
