"""Helpers (no tests): two warehouses compared row for row (a rebuild against the incremental build)."""
from tests.support.db import run_sql

# Columns the warehouse's own clock fills (when a row was loaded, detected, rejected): not data.
CLOCK_COLUMNS = {"loaded_at", "detected_at", "rejected_at"}


def relations(url):
    """The warehouse's tables and views, by name (the load's staging tables left out)."""
    return [row[0] for row in run_sql(
        url, "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' "
             "AND table_name NOT LIKE 'etl_stage_%' ORDER BY 1")]


def contents(url, relation):
    """Every row of ``relation`` as sorted tuples of text, without the CLOCK_COLUMNS."""
    columns = [row[0] for row in run_sql(
        url, "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' "
             "AND table_name = :t ORDER BY ordinal_position", t=relation)]
    kept = ", ".join(f'"{c}"' for c in columns if c not in CLOCK_COLUMNS)
    rows = run_sql(url, f'SELECT {kept} FROM "{relation}"')  # nosec B608 - names read from the catalog
    return sorted(tuple(str(value) for value in row) for row in rows)
