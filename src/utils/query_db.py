"""Run one SQL statement on a fresh connection and return rows as dicts (seed interface)."""


def query_db(sql_string, connect_to_db, close_db_connection, dict_name="response", **kwargs):
    """Run ``sql_string`` with the bound parameters ``kwargs`` (``:name`` placeholders).

    ``connect_to_db()`` opens the connection and ``close_db_connection(conn)`` closes it, even on
    error. Returns ``{dict_name: [row dicts]}``; with ``dict_name=""`` returns only the first
    row as a dict (``{}`` when there is none).
    """
    conn = connect_to_db()
    try:
        rows = conn.run(sql_string, **kwargs)
        names = [column["name"] for column in (conn.columns or [])]
    finally:
        close_db_connection(conn)
    records = [dict(zip(names, row)) for row in (rows or [])]
    if dict_name == "":
        return records[0] if records else {}
    return {dict_name: records}
