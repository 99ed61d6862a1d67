"""Selected warehouse tables replaced in place by their rebuilt contents, one transaction per table.

The rebuild itself goes into a scratch database (``utils.rebuild.run``); each selected table is then
copied from it into the live warehouse: COPY out of the scratch table, and in the live warehouse, in ONE
transaction holding an ACCESS EXCLUSIVE lock on the table (readers wait for the commit: they see the
old table or the new one, never half), COPY into a temporary stage, then
- a fact table: every row deleted and the rebuilt rows inserted with their own keys and load orders (the
  serial's sequence moved past them, and the load order sequence past their orders, so a batch loaded
  later orders after every rebuilt version);
- a dimension: rows the rebuild lacks deleted, changed rows updated, new rows inserted (fact rows
  reference dimension rows: a dimension row still referenced that the rebuild lacks fails the table's
  transaction with RebuildError, and the table is left as it was: rebuild the referencing facts too).
Tables are taken in load order (dimensions first). A live warehouse created before the load order is
migrated first (``ensure_warehouse_schema``). Names come from the catalog's allow-list and are quoted by
the driver.
"""
import io
from typing import Collection, Dict, List, Sequence

from pg8000.native import Connection, identifier

from utils.catalog.warehouse import FACTS, WAREHOUSE_KEYS, WAREHOUSE_TABLES, check_warehouse_table
from utils.db.connection import end_quietly, sqlstate
from utils.errors import TotesysError
from utils.load.rollups import rebuild_rollups
from utils.load.schema import LOAD_ORDER_COLUMN, LOAD_ORDER_SEQUENCE, ensure_warehouse_schema
from utils.logger import get_logger

STAGE = "etl_rebuild_stage"
FOREIGN_KEY_VIOLATION = "23503"
logger = get_logger("rebuild")


class InPlaceError(TotesysError):
    """A table could not be replaced in place (its transaction rolled back; ``table`` names it)."""


def _columns(conn: Connection, table: str) -> List[str]:
    rows = conn.run("SELECT column_name::text FROM information_schema.columns WHERE table_schema = "
                    "current_schema() AND table_name = :t ORDER BY ordinal_position", t=table)
    return [row[0] for row in rows]


def replace_tables(live: Connection, scratch: Connection, tables: Collection[str]) -> Dict[str, int]:
    """Replace ``tables`` (warehouse table names) in the warehouse of ``live`` by their contents in
    ``scratch``; return {table: rows}. Raises UnknownTableError for a name not in the allow-list,
    InPlaceError when a table's columns differ between the two or its replacement breaks a foreign key."""
    for table in tables:
        check_warehouse_table(table)
    ensure_warehouse_schema(live)
    replaced = {}
    for table in [name for name in WAREHOUSE_TABLES if name in tables]:
        columns = _columns(scratch, table)
        if columns != _columns(live, table):
            raise InPlaceError(f"{table}: the rebuilt table's columns differ from the warehouse's",
                               table=table)
        listed = ", ".join(identifier(column) for column in columns)
        rows = io.BytesIO()
        # Allow-listed, quoted identifiers.
        copy = f"COPY (SELECT {listed} FROM {identifier(table)}) TO STDOUT WITH (FORMAT csv)"  # nosec B608
        scratch.run(copy, stream=rows)
        rows.seek(0)
        replaced[table] = _replace(live, table, columns, rows)
        logger.info("table replaced in place", table=table, rows=replaced[table])
    return replaced


def _replace(live: Connection, table: str, columns: Sequence[str], rows: io.BytesIO) -> int:
    quoted, listed = identifier(table), ", ".join(identifier(column) for column in columns)
    live.run("START TRANSACTION")
    try:
        live.run(f"LOCK TABLE {quoted} IN ACCESS EXCLUSIVE MODE")
        live.run(f"CREATE TEMPORARY TABLE {STAGE} (LIKE {quoted}) ON COMMIT DROP")
        live.run(f"COPY {STAGE} ({listed}) FROM STDIN WITH (FORMAT csv)", stream=rows)
        if table in FACTS:
            _replace_fact(live, quoted, listed, columns[0])
        else:
            _replace_dimension(live, quoted, columns, identifier(WAREHOUSE_KEYS[table][0]))
        if table in FACTS or table == "dim_design":  # the dashboard's rollups follow, in this transaction
            rebuild_rollups(live)
        count = live.run(f"SELECT count(*) FROM {quoted}")[0][0]  # nosec B608
        live.run("COMMIT")
        return int(count)
    except Exception as err:
        end_quietly(live)
        if sqlstate(err)[0] == FOREIGN_KEY_VIOLATION:
            raise InPlaceError(f"{table}: the rebuilt table lacks rows that other warehouse tables still "
                               "reference; replace those tables too (nothing of this table was changed)",
                               table=table) from None
        raise


def _replace_fact(live: Connection, quoted: str, listed: str, serial_column: str) -> None:
    # Allow-listed, quoted identifiers throughout.
    live.run(f"DELETE FROM {quoted}")  # nosec B608
    live.run(f"INSERT INTO {quoted} ({listed}) SELECT {listed} FROM {STAGE}")  # nosec B608
    serial = identifier(serial_column)
    live.run(f"SELECT setval(pg_get_serial_sequence(:t, :c), "  # nosec B608
             f"coalesce((SELECT max({serial}) FROM {quoted}), 0) + 1, false)",
             t=quoted, c=serial_column)
    live.run("SELECT setval(CAST(:s AS regclass), greatest((SELECT last_value FROM "  # nosec B608
             f"{identifier(LOAD_ORDER_SEQUENCE)}), (SELECT coalesce(max({identifier(LOAD_ORDER_COLUMN)}), 0) "
             f"FROM {quoted})))", s=LOAD_ORDER_SEQUENCE)


def _replace_dimension(live: Connection, quoted: str, columns: Sequence[str], key: str) -> None:
    listed = ", ".join(identifier(column) for column in columns)
    values = ", ".join(f"s.{identifier(column)}" for column in columns)
    # Allow-listed, quoted identifiers throughout.
    live.run(f"DELETE FROM {quoted} d WHERE NOT EXISTS "  # nosec B608
             f"(SELECT 1 FROM {STAGE} s WHERE s.{key} = d.{key})")
    live.run(f"UPDATE {quoted} d SET ({listed}) = ROW({values}) FROM {STAGE} s "  # nosec B608
             f"WHERE s.{key} = d.{key} AND ROW({values}) IS DISTINCT FROM "
             f"ROW({', '.join(f'd.{identifier(column)}' for column in columns)})")
    live.run(f"INSERT INTO {quoted} ({listed}) SELECT {listed} FROM {STAGE} s WHERE NOT EXISTS "  # nosec B608
             f"(SELECT 1 FROM {quoted} d WHERE d.{key} = s.{key})")
