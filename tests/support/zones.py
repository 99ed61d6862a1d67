"""A source database in a time zone of its own, written to as the application's writers write (no tests)."""
from pg8000.native import identifier

from tests.support.db import run_sql
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url


def set_database_timezone(url, zone):
    """ALTER DATABASE ... SET timezone: every new session of the database gets ``zone``."""
    database = credentials_from_url(url)["database"]
    # ALTER DATABASE takes no bound parameter: the zone is checked by the server as a literal.
    zone_literal = "'" + zone.replace("'", "''") + "'"
    run_sql(url, f"ALTER DATABASE {identifier(database)} SET timezone = {zone_literal}")


def writer(url):
    """A session in the database's configured zone, as the application's own writers have."""
    return connect_to_db(credentials=credentials_from_url(url), timezone=None)


def write(url, sql):
    conn = writer(url)
    try:
        return conn.run(sql)
    finally:
        close_db_connection(conn)
