"""Schema drift: does totesys still have the columns, with the types, that the ingest reads?

``check_source_schema(conn, tables)`` reads the catalog (``pg_attribute``) for the requested tables and
compares every column of ``utils.catalog.source.SOURCE_SCHEMAS`` with what the source holds. The rule errs on
the side of failing loudly: a source type is *compatible* only when every value it can hold lands in
the landing column's Arrow type unchanged.

| landing type (spec type)            | compatible source types                                   |
|-------------------------------------|-----------------------------------------------------------|
| int32 (integer)                     | integer, smallint                                         |
| string (text, varchar(n), enum)     | text, varchar / varchar(n) of any length, any enum type   |
| timestamp[ms] (timestamp(3))        | timestamp(p) without time zone with p <= 3                |
| decimal128(10, 2) (numeric(10,2))   | numeric(p, 2) with p <= 10                                |
| bool (boolean)                      | boolean                                                   |

Anything else (bigint, numeric(12,4), unconstrained numeric, timestamp(6), timestamp with time zone,
char(n), which pads values, a domain, a date) raises SchemaDriftError naming table, column, expected
and found types, as does a column (or table) that is gone. A column the source has and the spec does not
is ignored (the COPY names its columns) and reported.
"""
from typing import Any, Dict, Iterable, List

import pyarrow as pa

from utils.errors import SchemaDriftError
from utils.catalog.source import SOURCE_SCHEMAS, check_source_table

CATALOG_SQL = (
    "SELECT c.relname::text, a.attname::text, t.typname::text, t.typtype::text, a.atttypmod, "
    "format_type(a.atttypid, a.atttypmod) "
    "FROM pg_class c "
    "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
    "JOIN pg_type t ON t.oid = a.atttypid "
    "WHERE c.relkind IN ('r', 'p') AND pg_table_is_visible(c.oid) "
    "AND c.relname = ANY(CAST(:names AS text[])) "
    "ORDER BY c.relname, a.attnum")

# numeric's typmod packs (precision << 16 | scale) + VARHDRSZ.
_VARHDRSZ = 4


def expected_sql_type(arrow_type: pa.DataType) -> str:
    """The source types a landing column of ``arrow_type`` accepts, in words (for messages)."""
    if pa.types.is_int32(arrow_type):
        return "integer (or smallint)"
    if pa.types.is_string(arrow_type):
        return "text, varchar(n) or an enum"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp(3) without time zone (precision 0-3)"
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale}) (precision <= {arrow_type.precision})"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    raise TypeError(f"no SQL type known for landing type {arrow_type}")


def is_compatible(arrow_type: pa.DataType, typname: str, typtype: str, typmod: int) -> bool:
    """True when every value of the source type (pg_type.typname/typtype, pg_attribute.atttypmod)
    lands in ``arrow_type`` unchanged."""
    if pa.types.is_int32(arrow_type):
        return typname in ("int4", "int2")
    if pa.types.is_string(arrow_type):
        return typname in ("text", "varchar") or typtype == "e"
    if pa.types.is_timestamp(arrow_type):
        # typmod -1 = no precision given = microseconds.
        return typname == "timestamp" and 0 <= typmod <= 3
    if pa.types.is_decimal(arrow_type):
        if typname != "numeric" or typmod < _VARHDRSZ:
            return False
        precision, scale = (typmod - _VARHDRSZ) >> 16, (typmod - _VARHDRSZ) & 0xFFFF
        return scale == arrow_type.scale and precision <= arrow_type.precision
    if pa.types.is_boolean(arrow_type):
        return typname == "bool"
    return False


def check_source_schema(conn: Any, tables: Iterable[str]) -> Dict[str, List[str]]:
    """Compare the source columns of ``tables`` with SOURCE_SCHEMAS; return the ignored columns.

    ``conn`` is an open pg8000 native connection to totesys. Returns ``{table: [column, ...]}`` of the
    columns the source has beyond the spec (tables with none are left out), in physical order.
    Raises SchemaDriftError for the first table (in ``tables`` order) and column (in spec order) that
    is missing or has an incompatible type, UnknownTableError for a name not in the allow-list.
    """
    for table in tables:
        check_source_table(table)
    found: Dict[str, Dict[str, Any]] = {table: {} for table in tables}
    for table, column, typname, typtype, typmod, shown in conn.run(CATALOG_SQL, names=list(tables)):
        found[table][column] = (typname, typtype, typmod, shown)
    ignored = {}
    for table in tables:
        columns = found[table]
        if not columns:
            raise SchemaDriftError(table, None, "the table", None)
        for field in SOURCE_SCHEMAS[table]:
            if field.name not in columns:
                raise SchemaDriftError(table, field.name, expected_sql_type(field.type), None)
            typname, typtype, typmod, shown = columns[field.name]
            if not is_compatible(field.type, typname, typtype, typmod):
                raise SchemaDriftError(table, field.name, expected_sql_type(field.type), shown)
        extra = [column for column in columns if column not in SOURCE_SCHEMAS[table].names]
        if extra:
            ignored[table] = extra
    return ignored
