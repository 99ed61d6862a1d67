"""Statements sent in one round trip: values inlined as SQL literals, the simple query protocol.

pg8000 sends a statement with bound parameters as three round trips (parse; describe and bind;
execute), each a wait in the run queue of a busy host; a statement without parameters goes as one
simple query. For the few statements run on every batch whose values are plain (integers, lists of
integers, strings without backslashes, NULL: the rollups' per-batch statements, the kept connection's
check), ``run_inline`` writes the values into the text instead. Anything else is refused before
anything is sent: a value that needs escaping beyond doubling quotes stays a bound parameter.
"""
import re
from typing import Any, List, Mapping

from pg8000.native import Connection


def sql_literal(value: Any) -> str:
    """``value`` as a SQL literal: NULL, a boolean, an integer, a list of integers (an array literal,
    cast where it is used) or a string without backslashes or NUL (quotes doubled: with no backslash
    the literal means the same whatever the server's standard_conforming_strings). Anything else raises
    (TypeError, ValueError)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "'{" + ",".join(str(_integer(item)) for item in value) + "}'"
    if isinstance(value, str):
        if "\\" in value or "\0" in value:
            raise ValueError(f"not inlined into SQL: {value!r}")
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"not inlined into SQL: {type(value).__name__}")


def _integer(item: Any) -> int:
    """An array element: an integer (a bool or a float is refused, not converted)."""
    if isinstance(item, bool) or not isinstance(item, int):
        raise TypeError(f"not inlined into SQL as an integer: {item!r}")
    return int(item)


# A quoted literal or identifier (kept as written: a ":name" inside one is text), or a ":name"
# placeholder not preceded by ":" (a "::type" cast) or a word character.
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(?<![:\w]):([A-Za-z_]\w*)")


def inline(sql: str, params: Mapping[str, Any]) -> str:
    """``sql`` with its ``:name`` placeholders outside quotes replaced by ``params``' literals
    (``sql_literal``). A placeholder without a value raises KeyError."""
    return _TOKEN.sub(lambda match: sql_literal(params[match.group(1)]) if match.group(1) else match.group(0),
                      sql)


def run_inline(conn: Connection, sql: str, params: Mapping[str, Any]) -> List[List[Any]]:
    """Run ``sql`` with its placeholders inlined (``inline``) as one simple query: one round trip.
    Returns the rows."""
    rows: List[List[Any]] = conn.run(inline(sql, params))  # nosec B608 - literals from sql_literal
    return rows
