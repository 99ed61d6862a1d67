"""Test helpers: a database given by URL (the one way tests run SQL)."""
import os

from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url


def connect(url):
    """An open connection to the database at ``url`` (sessions in UTC, as the pipeline's own)."""
    return connect_to_db(credentials=credentials_from_url(url))


def run_sql(url, sql, **params):
    """Open a connection, run ``sql`` with bound ``params``, close; return the rows."""
    conn = connect(url)
    try:
        return conn.run(sql, **params)
    finally:
        close_db_connection(conn)


def pgpass_file(folder, text, mode=0o600):
    """A libpq password file in ``folder`` holding ``text``: the environment that names it."""
    path = folder / "pgpass"
    path.write_text(text)
    os.chmod(path, mode)
    return {"PGPASSFILE": str(path)}
