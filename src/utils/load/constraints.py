"""Set-wise foreign-key validation of a large fact append (issue 11).

Each fact row checks 7-9 foreign keys; PostgreSQL checks them row by row (one RI trigger per row and
key), which was 70-85% of a large load. For a large append this module does what pg_restore does: inside
the batch's transaction it drops the fact table's foreign-key constraints, the caller appends, and the
constraints are re-created exactly as they were (name, ``pg_get_constraintdef`` text, hence
deferrability and NOT VALID), so PostgreSQL validates each one with ONE set-based query over the table.

The cost: ``ALTER TABLE ... DROP CONSTRAINT`` takes an ACCESS EXCLUSIVE lock on the fact table and on
each table the key references (PostgreSQL removes the key's triggers there too), held until the batch's
transaction ends: readers of those tables wait for the rest of that batch's load. It is taken only for an
append of at least ``SETWISE_MIN_ROWS`` rows that is at least ``SETWISE_MIN_FRACTION`` of the rows
already in the table (a re-validation reads the whole table, so a small append to a big table is cheaper
row by row; both thresholds measured, see docs/BENCHMARKS.md). A load user that does not own the fact
table (or may not REFERENCE a dimension) keeps the row-by-row path, with one INFO line.

If a re-created constraint finds a dangling reference, ``ForeignKeyViolationError`` names it. The load
(``merge.merge_fact``) appends first when every key of the table is validated and checked at once
(``checked_at_once``): on that error it rolls back to a savepoint taken before the append, parks the
dangling rows and appends the rest. Otherwise it parks them before the append, and the error, should it
still come, fails the whole batch, the constraints back exactly as they were (the drop was in that
transaction).
"""
from contextlib import contextmanager

import pg8000.exceptions
from pg8000.native import identifier

from utils.db.connection import sqlstate
from utils.errors import ForeignKeyViolationError
from utils.logger import get_logger

# Below these, an append keeps PostgreSQL's row-by-row checks (measured: docs/BENCHMARKS.md).
SETWISE_MIN_ROWS = 5_000
SETWISE_MIN_FRACTION = 0.15
FOREIGN_KEY_VIOLATION = "23503"

logger = get_logger("load")


def foreign_keys(conn, table):
    """[(constraint name, definition)] of ``table``'s foreign keys in the current schema, by name.

    The definition is PostgreSQL's own ``pg_get_constraintdef`` text (deferrability and NOT VALID
    included): re-created from it, the constraint is what it was."""
    rows = conn.run(
        "SELECT con.conname, pg_get_constraintdef(con.oid) FROM pg_constraint con "
        "JOIN pg_class c ON c.oid = con.conrelid "
        "WHERE con.contype = 'f' AND c.relname = :table AND c.relnamespace = current_schema()::regnamespace "
        "ORDER BY con.conname", table=table)
    return [(name, definition) for name, definition in rows]


def checked_at_once(conn, table):
    """True when every foreign key of ``table`` checks a new row before the statement ends: validated
    (not NOT VALID, whose re-creation would not check the rows appended while it was dropped) and not
    INITIALLY DEFERRED (checked only at COMMIT)."""
    rows = conn.run(
        "SELECT coalesce(bool_and(con.convalidated AND NOT con.condeferred), true) FROM pg_constraint con "
        "JOIN pg_class c ON c.oid = con.conrelid "
        "WHERE con.contype = 'f' AND c.relname = :table AND c.relnamespace = current_schema()::regnamespace",
        table=table)
    return bool(rows[0][0])


def is_foreign_key_violation(err):
    """True for ForeignKeyViolationError and for PostgreSQL's foreign_key_violation (23503)."""
    return isinstance(err, ForeignKeyViolationError) or sqlstate(err)[0] == FOREIGN_KEY_VIOLATION


def may_alter(conn, table):
    """True when the session may drop and re-create ``table``'s foreign keys: it has its owner's
    privileges and the REFERENCES privilege on every table they reference."""
    rows = conn.run(
        "SELECT pg_has_role(c.relowner, 'USAGE') AND coalesce(bool_and("
        "has_table_privilege(con.confrelid, 'REFERENCES')), true) "
        "FROM pg_class c LEFT JOIN pg_constraint con ON con.conrelid = c.oid AND con.contype = 'f' "
        "WHERE c.relname = :table AND c.relnamespace = current_schema()::regnamespace "
        "GROUP BY c.relowner", table=table)
    return bool(rows and rows[0][0])


def use_setwise(conn, table, rows):
    """True when appending ``rows`` rows to ``table`` should validate its foreign keys set-wise."""
    if rows < SETWISE_MIN_ROWS:
        return False
    existing = conn.run("SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                        "WHERE relname = :table AND relnamespace = current_schema()::regnamespace",
                        table=table)
    return rows >= SETWISE_MIN_FRACTION * (existing[0][0] if existing else 0)


@contextmanager
def setwise_foreign_keys(conn, table, rows):
    """Run the body with ``table``'s foreign keys dropped, then re-create them (inside the caller's
    transaction), when ``use_setwise`` says so and the session may; otherwise just run the body.

    Yields True when the keys were dropped. Raises ForeignKeyViolationError (attributes ``table``,
    ``constraint``) when a re-created key finds a dangling reference; the caller rolls back."""
    if not use_setwise(conn, table, rows):
        yield False
        return
    if not may_alter(conn, table):
        logger.info("foreign keys checked row by row: the load user does not own the table",
                    table=table, rows=rows)
        yield False
        return
    keys = foreign_keys(conn, table)
    for name, _ in keys:
        conn.run(f"ALTER TABLE {identifier(table)} DROP CONSTRAINT {identifier(name)}")
    yield True
    for name, definition in keys:
        try:
            # definition is pg_get_constraintdef's text, read from the catalog in this transaction
            conn.run(f"ALTER TABLE {identifier(table)} ADD CONSTRAINT {identifier(name)} "  # nosec B608
                     f"{definition}")
        except pg8000.exceptions.DatabaseError as err:
            if not is_foreign_key_violation(err):
                raise
            raise ForeignKeyViolationError(table, name, sqlstate(err)[1].get("D", "")) from err
    logger.info("foreign keys validated set-wise", table=table, rows=rows, constraints=len(keys))
