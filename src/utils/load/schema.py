"""The warehouse schema: check what exists against ``utils.catalog.warehouse``, create what is missing.

Before anything is loaded, every existing warehouse table must have compatible columns (either spelling
of ``counterparty_legal_address_line_2``; narrower columns are accepted and their limits recorded, see
``TargetTable``); when any table, view or version index is missing the DDL file is run (every statement
in it is idempotent).
"""
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Collection, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa
from pg8000.native import Connection, identifier

from utils.catalog.warehouse import (FACTS, WAREHOUSE_DDL, WAREHOUSE_SCHEMAS, WAREHOUSE_TABLES,
                                     warehouse_column_type, warehouse_ddl)
from utils.db.connection import end_quietly
from utils.errors import SchemaMismatchError
from utils.logger import get_logger

SCHEMA_FILE = WAREHOUSE_DDL
LEDGER = "etl_load_ledger"
REJECTED = "etl_rejected_rows"
DIMENSION_VERSIONS = "etl_dimension_version"
DELETED = "etl_deleted_rows"
SUSPENDED_KEYS = "etl_suspended_foreign_key"
# The load order (docs/RELIABILITY.md defect 3): a sequence, a column of the ledger and of
# etl_dimension_version, and a column of every fact table.
LOAD_ORDER_SEQUENCE = "etl_load_order_seq"
LOAD_ORDER_COLUMN = "etl_load_order"
LOAD_ORDER_COLUMNS = {LEDGER: "load_order", DIMENSION_VERSIONS: "load_order",
                      **{fact: LOAD_ORDER_COLUMN for fact in FACTS}}
OWN_TABLES = (LEDGER, REJECTED, DIMENSION_VERSIONS, DELETED, SUSPENDED_KEYS)

VIEWS = ("current_sales_order", "current_purchase_order", "current_payment", "deleted_dimension_rows")
VERSION_INDEXES = tuple(f"{name}_version_order_key" for name in FACTS) + (f"{REJECTED}_value_version_key",)
# The (id, stamp) unique indexes of warehouses created before value-aware versions: the DDL drops them; one
# still present (re-created by a deployment rolled back) makes the schema incomplete (RELIABILITY defect 13).
# etl_rejected_rows's: one record per stamp, before value keys (defect 16).
OLD_VERSION_INDEXES = tuple(f"{name}_version_key" for name in FACTS + (REJECTED,))
# pg_advisory_xact_lock key serialising loads into one warehouse.
ADVISORY_LOCK_KEY = 0x7074_6573_7973_0003
# The DDL (once per warehouse) waits at most this long for any lock: readers queue behind it (issue 19).
SCHEMA_LOCK_TIMEOUT = "1s"
# A warehouse column as information_schema describes it: (data_type, datetime_precision, numeric_precision,
# numeric_scale, character_maximum_length).
ColumnType = Tuple[str, Optional[int], Optional[int], Optional[int], Optional[int]]
# Other spellings of a column that existing warehouses use.
COLUMN_ALTERNATIVES = {("dim_counterparty", "counterparty_legal_address_line_2"):
                       ("counterparty_legal_address_line2",)}


logger = get_logger("load")


def sql_type(kind: pa.DataType) -> Tuple[str, Tuple[str, ...]]:
    """(staging column type, accepted information_schema data_types) of an Arrow type."""
    if pa.types.is_integer(kind):
        return "integer", ("integer", "bigint", "smallint")
    if pa.types.is_string(kind):
        return "text", ("character varying", "text", "character")
    if pa.types.is_date(kind):
        return "date", ("date",)
    if pa.types.is_time(kind):
        return "time(6)", ("time without time zone",)
    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision}, {kind.scale})", ("numeric",)
    if pa.types.is_boolean(kind):
        return "boolean", ("boolean",)
    if pa.types.is_timestamp(kind):
        return "timestamp(3)", ("timestamp without time zone",)
    raise TypeError(f"no SQL type for {kind}")


def schema_statements() -> List[str]:
    """The statements of the warehouse DDL (``warehouse_ddl``: the file with the catalogue's columns), in
    order."""
    text = warehouse_ddl()
    return [statement.strip() for statement in text.split(";\n") if _has_sql(statement)]


def _has_sql(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


def _warehouse_columns(conn: Connection) -> Dict[str, Dict[str, ColumnType]]:
    rows = conn.run(
        "SELECT table_name, column_name, data_type, datetime_precision, numeric_precision, numeric_scale, "
        "character_maximum_length FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY(:names)",
        names=list(WAREHOUSE_TABLES) + list(OWN_TABLES))
    found: Dict[str, Dict[str, ColumnType]] = {}
    for table, column, data_type, time_precision, precision, scale, length in rows:
        found.setdefault(table, {})[column] = (data_type, time_precision, precision, scale, length)
    return found


@dataclass
class TargetTable:
    """How one warehouse table is spelled and how much its columns hold.

    ``names``: {column as the pipeline names it: column in the warehouse}. ``limits``: {column: limit}
    for the columns narrower than the values the pipeline may bring, a limit being ``("length", n)``
    (varchar(n): characters), ``("range", low, high)`` (integers) or ``("digits", n)`` (numeric: digits
    before the decimal point). ``references``: [(column, dimension table, dimension column)] of the
    table's single-column foreign keys, as the pipeline names them. ``padded``: the text columns the
    warehouse keeps blank-padded (``character(n)``: trailing blanks are not part of their values, so a
    staged value is compared with them as ``bpchar``; docs/RELIABILITY.md defect 17).
    """
    names: Dict[str, str]
    limits: Dict[str, Tuple[Any, ...]] = dataclass_field(default_factory=dict)
    references: List[Tuple[str, str, str]] = dataclass_field(default_factory=list)
    padded: FrozenSet[str] = frozenset()


_INTEGER_RANGES = {"smallint": (-2 ** 15, 2 ** 15 - 1)}


def check_table_columns(table: str, existing: Mapping[str, Sequence[Any]], addable: Collection[str] = ()
                        ) -> "TargetTable":
    """Map each expected column of ``table`` to its name and limit in the warehouse; raise on
    incompatibility. Returns a TargetTable (without references). The columns named in ``addable`` may be
    missing (the load adds them: ``add_columns``).

    ``existing``: {column: (data_type, datetime_precision, numeric_precision, numeric_scale,
    character_maximum_length)}. A column narrower than the values (varchar(n), smallint, numeric with
    fewer integer digits) is accepted: rows that do not fit are quarantined at load. Raises
    SchemaMismatchError naming the table and column when one is missing or has a type that would
    change values (another kind of type, time without milliseconds, numeric with fewer decimals).
    """
    mapping: Dict[str, str] = {}
    limits: Dict[str, tuple] = {}
    padded = set()
    for field in WAREHOUSE_SCHEMAS[table]:
        names = (field.name,) + COLUMN_ALTERNATIVES.get((table, field.name), ())
        actual = next((name for name in names if name in existing), None)
        if actual is None and field.name in addable:
            continue
        if actual is None:
            raise SchemaMismatchError(f"warehouse table {table}: column {field.name!r} is missing",
                                      table=table)
        data_type, time_precision, precision, scale, length = (tuple(existing[actual]) + (None,))[:5]
        _, accepted = sql_type(field.type)
        too_coarse = (
            (pa.types.is_time(field.type) and time_precision is not None and time_precision < 3)
            or (pa.types.is_decimal(field.type) and scale is not None and scale < field.type.scale))
        if data_type not in accepted or too_coarse:
            raise SchemaMismatchError(
                f"warehouse table {table}: column {actual!r} has type {data_type}"
                f"{_precision_text(data_type, time_precision, precision, scale)}, "
                f"expected {' or '.join(accepted)} "
                f"able to hold {field.type}", table=table)
        if pa.types.is_string(field.type) and data_type == "character":
            padded.add(field.name)
        if pa.types.is_string(field.type) and length is not None:
            limits[field.name] = ("length", length)
        elif data_type in _INTEGER_RANGES:
            limits[field.name] = ("range", *_INTEGER_RANGES[data_type])
        elif (pa.types.is_decimal(field.type) and precision is not None and scale is not None
              and precision - scale < field.type.precision - field.type.scale):
            limits[field.name] = ("digits", precision - scale)
        mapping[field.name] = actual
    return TargetTable(mapping, limits, padded=frozenset(padded))


def _precision_text(data_type: str, time_precision: Optional[int], precision: Optional[int],
                    scale: Optional[int]) -> str:
    if data_type == "numeric" and precision is not None and scale is not None:
        return f"({precision},{scale})"
    if data_type.startswith("time") and time_precision is not None:
        return f"({time_precision})"
    return ""


def _references(conn: Connection, targets: Dict[str, "TargetTable"]) -> Dict[str, "TargetTable"]:
    """Fill each fact's TargetTable.references from the warehouse's own single-column foreign keys,
    those suspended for a large load included (``utils.load.constraints``: the batches then check them)."""
    rows = conn.run(
        "SELECT c.conrelid::regclass::text, a.attname::text, c.confrelid::regclass::text, "  # nosec B608
        "f.attname::text "
        "FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
        "JOIN pg_attribute f ON f.attrelid = c.confrelid AND f.attnum = c.confkey[1] "
        "WHERE c.contype = 'f' AND cardinality(c.conkey) = 1 AND c.conrelid::regclass::text = ANY(:facts) "
        f"UNION SELECT table_name, column_name, referenced_table, referenced_column FROM {SUSPENDED_KEYS} "
        "WHERE column_name IS NOT NULL AND NOT re_added", facts=list(FACTS))
    for fact, column, dimension, dimension_column in rows:
        if dimension not in targets:
            continue
        by_name = {name: canonical for canonical, name in targets[fact].names.items()}
        dim_by_name = {name: canonical for canonical, name in targets[dimension].names.items()}
        if column in by_name and dimension_column in dim_by_name:
            targets[fact].references.append((by_name[column], dimension, dim_by_name[dimension_column]))
    return targets


def _has_load_order(conn: Connection, existing: Mapping[str, Mapping[str, ColumnType]]) -> bool:
    """True when the warehouse has the load order (sequence and columns); a warehouse created before it
    is migrated by the DDL file (``ADD COLUMN IF NOT EXISTS``, ``CREATE SEQUENCE IF NOT EXISTS``)."""
    if any(column not in existing.get(table, {}) for table, column in LOAD_ORDER_COLUMNS.items()):
        return False
    return not conn.run("SELECT to_regclass(:name) IS NULL", name=LOAD_ORDER_SEQUENCE)[0][0]


def next_load_order(conn: Connection) -> int:
    """The next value of the load order sequence: the order of the batch being loaded (inside its
    transaction, under the loads' advisory lock, so a later batch always has a greater order)."""
    return int(conn.run("SELECT nextval(CAST(:name AS regclass))", name=LOAD_ORDER_SEQUENCE)[0][0])


def missing_nullable_columns(existing: Mapping[str, Mapping[str, ColumnType]]) -> List[Tuple[str, str, str]]:
    """[(table, column, DDL type)] of the nullable catalogue columns (``WAREHOUSE_SCHEMAS``) that an
    existing warehouse table lacks under every spelling: columns added to the catalogue after the table
    was created. A missing NOT NULL column is not here (``check_table_columns`` refuses it: its old rows
    would have no value)."""
    missing = []
    for table in WAREHOUSE_TABLES:
        columns = existing.get(table)
        if columns is None:
            continue
        for field in WAREHOUSE_SCHEMAS[table]:
            names = (field.name,) + COLUMN_ALTERNATIVES.get((table, field.name), ())
            if field.nullable and not any(name in columns for name in names):
                missing.append((table, field.name, warehouse_column_type(field.type)))
    return missing


def add_columns(conn: Connection, missing: Sequence[Tuple[str, str, str]]) -> None:
    """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` each of ``missing`` (``missing_nullable_columns``), in
    one transaction under the schema's advisory lock (a concurrent load adds them once). A fact table's new
    column joins its current_* view (the views select ``f.*``, expanded when a view is created: the DDL's
    views are created again)."""
    conn.run("START TRANSACTION")
    try:
        conn.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
        conn.run("SELECT set_config('lock_timeout', :value, true)", value=SCHEMA_LOCK_TIMEOUT)
        for table, column, kind in missing:
            # Identifiers from the catalogue's allow-list, quoted; the type from sql_type, never input.
            conn.run(f"ALTER TABLE {identifier(table)} ADD COLUMN IF NOT EXISTS "  # nosec B608
                     f"{identifier(column)} {kind}")
        if any(table in FACTS for table, _, _ in missing):
            for statement in schema_statements():
                if statement.startswith("CREATE OR REPLACE VIEW"):
                    conn.run(statement)
        conn.run("COMMIT")
    except BaseException:
        end_quietly(conn)
        raise
    logger.info("warehouse columns added", columns=[f"{table}.{column}" for table, column, _ in missing])


def ensure_warehouse_schema(conn: Connection) -> Dict[str, "TargetTable"]:
    """Check existing tables, create whatever is missing; return {table: TargetTable}.

    A nullable column of the catalogue that an existing table lacks is added to it (``add_columns``:
    the one migration, for a column added to the catalogue). Nothing is created or changed when an
    existing table has an incompatible column, or lacks a NOT NULL one (SchemaMismatchError naming
    table and column).
    """
    existing = _warehouse_columns(conn)
    missing = missing_nullable_columns(existing)
    for table in WAREHOUSE_TABLES:
        if table in existing:
            addable = {column for name, column, _ in missing if name == table}
            check_table_columns(table, existing[table], addable)
    if LEDGER in existing and not {"batch_id", "manifest_key", "row_counts"} <= set(existing[LEDGER]):
        raise SchemaMismatchError(
            f"warehouse table {LEDGER}: expected columns batch_id, manifest_key, row_counts", table=LEDGER)
    views = {row[0] for row in conn.run(
        "SELECT table_name FROM information_schema.views WHERE table_schema = current_schema() "
        "AND table_name = ANY(:names)", names=list(VIEWS))}
    indexes = {row[0] for row in conn.run(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ANY(:names)",
        names=list(VERSION_INDEXES + OLD_VERSION_INDEXES))}
    if missing:
        add_columns(conn, missing)
        existing = _warehouse_columns(conn)
    complete = (set(WAREHOUSE_TABLES) | set(OWN_TABLES)) <= set(existing) and views == set(VIEWS) \
        and indexes == set(VERSION_INDEXES) and _has_load_order(conn, existing)
    if not complete:
        conn.run("START TRANSACTION")
        try:
            conn.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
            conn.run("SELECT set_config('lock_timeout', :value, true)", value=SCHEMA_LOCK_TIMEOUT)
            for statement in schema_statements():
                conn.run(statement)
            conn.run("COMMIT")
        except BaseException:
            end_quietly(conn)
            raise
        logger.info("warehouse schema created", missing_tables=sorted(
            (set(WAREHOUSE_TABLES) | set(OWN_TABLES)) - set(existing)))
        existing = _warehouse_columns(conn)
    targets = {table: check_table_columns(table, existing[table]) for table in WAREHOUSE_TABLES}
    return _references(conn, targets)
