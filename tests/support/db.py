"""Test helper: run one SQL statement against a database given by URL."""
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url


def run_sql(url, sql, **params):
    """Open a connection, run ``sql`` with bound ``params``, close; return the rows."""
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        return conn.run(sql, **params)
    finally:
        close_db_connection(conn)
