"""A strict parser of test_decoding's text lines: every change of a source table becomes a Change, and a
line it cannot read raises CdcDecodeError naming the table, the column and the LSN. Nothing is skipped
except what is known not to be a change of a source table (BEGIN, COMMIT, logical messages, the changes of
tables outside the allow-list or outside the source's schema).

A change line (``src/backend/replication/logical/decode`` → ``contrib/test_decoding``)::

    table public.payment: UPDATE: payment_id[integer]:7 ... paid[boolean]:true payment_date[text]:'2022-11-03'

Columns are ``name[type]:value``: a name quoted as an identifier when it needs to be, the type as
``format_type``, the value ``null``, a number or boolean bare, anything else in single quotes with ``''``
for a quote. An UPDATE that changed the key, or a table with REPLICA IDENTITY FULL, prints ``old-key:``
then ``new-tuple:``; a DELETE prints the key (or ``(no-tuple-data)`` without a replica identity). A TRUNCATE
names every table it emptied (those a CASCADE reached too) and its flags::

    table public.payment, public.transaction: TRUNCATE: cascade

and becomes a Truncate of the source tables among them: every row of each is gone.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

from utils.catalog.source import PRIMARY_KEYS, SOURCE_TABLES
from utils.errors import TotesysError

KINDS = ("INSERT", "UPDATE", "DELETE")
# Lines that are not changes of rows.
NOT_CHANGES = ("BEGIN", "COMMIT", "message:")


class CdcDecodeError(TotesysError):
    """A change CDC cannot land: ``table``, ``column`` (None when not about one) and ``lsn`` say
    where. The run fails; nothing of its batch is landed and the slot is not advanced."""

    def __init__(self, table: Optional[str], column: Optional[str], lsn: str, detail: str) -> None:
        where = f"totesys.{table}" + (f".{column}" if column else "") if table else "a change"
        super().__init__(f"cannot decode {where} at LSN {lsn}: {detail}", table=table)
        self.column, self.lsn = column, lsn


@dataclass(frozen=True)
class Change:
    """One row change: ``kind`` INSERT, UPDATE or DELETE; ``key`` the primary key; ``row`` {column: text
    value or None} of the new row (None for a DELETE); ``old_key`` the key before an UPDATE that changed
    it."""
    table: str
    kind: str
    key: int
    row: Optional[Dict[str, Optional[str]]]
    lsn: str
    old_key: Optional[int] = None


@dataclass(frozen=True)
class Truncate:
    """A TRUNCATE: every row of the source ``tables`` it names (in the order the line gives them) is gone."""
    tables: Tuple[str, ...]
    lsn: str


def parse_line(lsn: str, line: str, schema: str = "public") -> Union[Change, Truncate, None]:
    """The Change (or Truncate) of one test_decoding ``line`` at ``lsn``, or None for a line that is not a
    change of a source table in ``schema``. Raises CdcDecodeError for anything it cannot read (a value it
    cannot parse, an unchanged TOAST value, a DELETE without its key, an unknown kind)."""
    if line.startswith(NOT_CHANGES):
        return None
    if not line.startswith("table "):
        raise CdcDecodeError(None, None, lsn, "not a test_decoding line")
    names, rest = _split_tables(line[len("table "):], lsn)
    kind, _, body = rest.partition(": ")
    if kind == "TRUNCATE" or rest == "TRUNCATE:":
        tables = tuple(table for table_schema, table in names
                       if table_schema == schema and table in SOURCE_TABLES)
        return Truncate(tables, lsn) if tables else None
    if len(names) != 1:
        raise CdcDecodeError(None, None, lsn, f"a {kind[:20]} of several tables")
    table_schema, table = names[0]
    if table_schema != schema or table not in SOURCE_TABLES:
        return None
    if kind not in KINDS:
        raise CdcDecodeError(table, None, lsn, f"unknown change kind {kind[:20]!r}")
    old, new = None, body
    if body.startswith("old-key: "):
        old_text, sep, new = body[len("old-key: "):].partition(" new-tuple: ")
        if not sep:
            raise CdcDecodeError(table, None, lsn, "old-key without new-tuple")
        old = parse_columns(table, old_text, lsn)
    if kind == "DELETE":
        if body == "(no-tuple-data)":
            raise CdcDecodeError(table, PRIMARY_KEYS[table], lsn,
                                 "DELETE without its key: the table has REPLICA IDENTITY NOTHING")
        return Change(table, kind, _key(table, parse_columns(table, body, lsn), lsn), None, lsn)
    row = parse_columns(table, new, lsn)
    key = _key(table, row, lsn)
    old_key = _key(table, old, lsn) if old is not None else None
    return Change(table, kind, key, row, lsn, old_key if old_key != key else None)


def _key(table: str, columns: Dict[str, Optional[str]], lsn: str) -> int:
    """The integer primary key of ``table`` in ``columns`` (CdcDecodeError when absent or not an integer)."""
    column = PRIMARY_KEYS[table]
    if column not in columns or columns[column] is None:
        raise CdcDecodeError(table, column, lsn, "the change has no primary key value")
    try:
        return int(str(columns[column]))
    except ValueError:
        raise CdcDecodeError(table, column, lsn, "the primary key is not an integer") from None


def _split_tables(text: str, lsn: str) -> Tuple[List[Tuple[str, str]], str]:
    """([(schema, table)], rest after ': ') of ``schema.table[, schema.table ...]: rest`` (names possibly
    double-quoted; several only in a TRUNCATE)."""
    tables, names, position = [], [], 0
    while True:
        name, position = _identifier(text, position, lsn)
        names.append(name)
        if text.startswith(".", position):
            position += 1
            continue
        if len(names) != 2:
            raise CdcDecodeError(None, None, lsn, "cannot read the table name")
        tables.append((names[0], names[1]))
        names = []
        if text.startswith(", ", position):
            position += 2
            continue
        if not text.startswith(": ", position):
            raise CdcDecodeError(None, None, lsn, "cannot read the table name")
        return tables, text[position + 2:]


def _identifier(text: str, position: int, lsn: str, table: Optional[str] = None) -> Tuple[str, int]:
    """(name, position after it) of a plain or double-quoted identifier at ``position``."""
    if text.startswith('"', position):
        out: List[str] = []
        position += 1
        while True:
            end = text.find('"', position)
            if end < 0:
                raise CdcDecodeError(table, None, lsn, "unterminated quoted identifier")
            out.append(text[position:end])
            if text.startswith('""', end):
                out.append('"')
                position = end + 2
                continue
            return "".join(out), end + 1
    end = position
    while end < len(text) and text[end] not in '.:[",':
        end += 1
    if end == position:
        raise CdcDecodeError(table, None, lsn, "empty identifier")
    return text[position:end], end


def parse_columns(table: str, text: str, lsn: str) -> Dict[str, Optional[str]]:
    """{column: text value or None} of test_decoding's ``name[type]:value name[type]:value ...``."""
    columns: Dict[str, Optional[str]] = {}
    position = 0
    while position < len(text):
        name, position = _identifier(text, position, lsn, table)
        if not text.startswith("[", position):
            raise CdcDecodeError(table, name, lsn, "expected [type] after the column name")
        type_end = text.find("]:", position)
        if type_end < 0:
            raise CdcDecodeError(table, name, lsn, "cannot read the column's type")
        type_name = text[position + 1:type_end]
        value, position = _value(table, name, type_name, text, type_end + 2, lsn)
        columns[name] = value
        if position < len(text):
            if text[position] != " ":
                raise CdcDecodeError(table, name, lsn, "garbage after the value")
            position += 1
    return columns


def _value(table: str, column: str, type_name: str, text: str, position: int,
           lsn: str) -> Tuple[Optional[str], int]:
    """(text value or None, position after it) of one value; booleans become 't'/'f' (COPY's text)."""
    if text.startswith("'", position):
        out: List[str] = []
        position += 1
        while True:
            end = text.find("'", position)
            if end < 0:
                raise CdcDecodeError(table, column, lsn, "unterminated quoted value")
            out.append(text[position:end])
            if text.startswith("''", end):
                out.append("'")
                position = end + 2
                continue
            return "".join(out), end + 1
    end = text.find(" ", position)
    end = len(text) if end < 0 else end
    bare = text[position:end]
    if bare == "null":
        return None, end
    if bare == "unchanged-toast-datum":
        raise CdcDecodeError(table, column, lsn, "an unchanged TOAST value is not in the change: "
                                                 "ALTER TABLE ... REPLICA IDENTITY FULL, then resync it")
    if type_name == "boolean":
        if bare not in ("true", "false"):
            raise CdcDecodeError(table, column, lsn, "a boolean that is neither true nor false")
        return bare[0], end
    if not bare or not _is_number(bare):
        raise CdcDecodeError(table, column, lsn, f"an unquoted value of type {type_name[:40]} that is not "
                                                 "a number")
    return bare, end


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
