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


def lambda_context(seconds):
    """A Lambda context object with ``seconds`` of the invocation left."""
    from types import SimpleNamespace
    return SimpleNamespace(aws_request_id="test", get_remaining_time_in_millis=lambda: int(seconds * 1000))


def duration_seconds(setting):
    """A PostgreSQL duration as SHOW gives it ('1500ms', '90s', '2min') in seconds."""
    for unit, factor in (("ms", 0.001), ("s", 1), ("min", 60), ("h", 3600)):
        if setting.endswith(unit) and setting[:-len(unit)].isdigit():
            return int(setting[:-len(unit)]) * factor
    raise AssertionError(setting)
