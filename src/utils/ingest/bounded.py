"""Bounded batches (issue 11): a first load or a catch-up of any size is landed in batches of at most
``MAX_BATCH_ROWS`` rows of the order/payment tables, so every Lambda invocation stays bounded.

A batch is cut at a source wall-clock time: the order/payment tables (``BOUNDED_TABLES``, the bulk of the
rows) take ``last_updated < cut`` instead of ``< localtimestamp``, where ``cut`` is the ``last_updated`` of
the (MAX_BATCH_ROWS + 1)-th of their new rows in time order (new: at or after the table's previous
``high``; all rows on a table's first run). The cut is one time for all of them, so a payment and its
transaction, an order and its transaction, land in the same batch as they would have together. The
dimension tables are small and always read up to ``localtimestamp``: a fact never waits for a dimension
row held back by the cut. Rows sharing one ``last_updated`` are never split: when more than MAX_BATCH_ROWS
rows share the first time, the batch takes all of them (the cut is the next later time).

Why the exactly-once and late-commit rules still hold is the same argument as for an uncut batch, with
``high = max(cut, prev.high)`` (docs/DESIGN.md, "Bounded batches"): the next run reads from
``high - overlap`` and excludes only rows below ``high`` whose transaction finished before this snapshot,
which are exactly the rows this batch read below ``high``.
"""
from pg8000.native import identifier

from utils.catalog.source import check_source_table

BOUNDED_TABLES = ("sales_order", "purchase_order", "transaction", "payment")


def batch_cut(conn, tables, lower_bounds, upper, max_rows):
    """The cut of this batch (a source wall-clock time, below ``upper``), or None when every new row
    fits in ``max_rows`` (or ``max_rows`` is 0: no cap).

    ``tables``: the bounded tables this run reads; ``lower_bounds``: {table: previous high} (absent: the
    table's first run, no lower bound); ``upper``: the run's wall clock. Runs in the caller's snapshot."""
    tables = [table for table in tables if table in BOUNDED_TABLES]
    if not max_rows or not tables:
        return None
    parts, params = [], {"upper": upper, "offset": max_rows}
    updated = identifier("last_updated")
    for number, table in enumerate(tables):
        check_source_table(table)
        where = f"{updated} < :upper"
        if lower_bounds.get(table) is not None:
            where += f" AND {updated} >= :low{number}"
            params[f"low{number}"] = lower_bounds[table]
        # identifiers from the allow-list, quoted; values bound
        parts.append(f"SELECT {updated} AS stamp FROM {identifier(table)} WHERE {where}")  # nosec B608
    rows = "(" + " UNION ALL ".join(parts) + ") AS new_rows"
    found = conn.run(f"SELECT stamp FROM {rows} ORDER BY stamp OFFSET :offset LIMIT 1",  # nosec B608
                     **params)
    if not found:
        return None
    cut = found[0][0]
    params.pop("offset")
    # Never an empty batch: when the rows before the cut are none (more than max_rows share the first
    # time), take that whole time and cut at the next one.
    first = conn.run(f"SELECT min(stamp) FROM {rows}", **params)[0][0]  # nosec B608
    if first == cut:
        later = conn.run(f"SELECT min(stamp) FROM {rows} WHERE stamp > :cut",  # nosec B608
                         cut=cut, **params)[0][0]
        return later
    return cut
