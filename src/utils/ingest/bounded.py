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

The rows of the overlap window below the previous ``high`` that the window reads again (written by a
transaction not certainly finished before the previous snapshot) count against the cap too, first: the
cut leaves fewer new rows when they are many. They cannot themselves be deferred (docs/DESIGN.md).
"""
from dataclasses import dataclass

from pg8000.native import identifier

from utils.catalog.source import check_source_table
from utils.logger import get_logger

logger = get_logger("ingest")

BOUNDED_TABLES = ("sales_order", "purchase_order", "transaction", "payment")


def batch_cut(conn, tables, lower_bounds, upper, max_rows, rereads=None):
    """The cut of this batch (a source wall-clock time, below ``upper``), or None when every row the
    window reads fits in ``max_rows`` (or ``max_rows`` is 0: no cap).

    ``tables``: the bounded tables this run reads; ``lower_bounds``: {table: previous high} (absent: the
    table's first run, no lower bound); ``upper``: the run's upper bound, one time or {table: time}. Runs in
    the caller's snapshot.
    ``rereads`` (an OverlapRereads, optional): the rows of the overlap window below each previous high that
    the window will read again (not certainly landed before) count against the cap first; they cannot be
    deferred (they lie below every bound this run can choose), so when they alone fill the cap the batch
    takes only the first new time."""
    tables = [table for table in tables if table in BOUNDED_TABLES]
    if not max_rows or not tables:
        return None
    uppers = upper if isinstance(upper, dict) else dict.fromkeys(tables, upper)
    parts, params = [], {}
    updated = identifier("last_updated")
    for number, table in enumerate(tables):
        check_source_table(table)
        params[f"upper{number}"] = uppers[table]
        where = f"{updated} < :upper{number}"
        reread = "false"
        if lower_bounds.get(table) is not None:
            params[f"low{number}"] = lower_bounds[table]
            if rereads is not None and table in rereads.lows:
                params.update({f"over{number}": rereads.lows[table],
                               f"xmin{number}": rereads.prev_xmins[table]})
                landed = rereads.landed_sql(f"xmin{number}")
                where += (f" AND {updated} >= :over{number}"
                          f" AND NOT ({updated} < :low{number} AND {landed})")
                reread = f"{updated} < :low{number}"
            else:
                where += f" AND {updated} >= :low{number}"
        # identifiers from the allow-list, quoted; values bound
        parts.append(f"SELECT {updated} AS stamp, {reread} AS reread "  # nosec B608
                     f"FROM {identifier(table)} WHERE {where}")
    if rereads is not None:
        params.update(xid_base=rereads.xid_base, cur_xmax=rereads.cur_xmax)
    rows = "(" + " UNION ALL ".join(parts) + ") AS window_rows"
    # One scan counts both kinds; only a batch over the cap (a backfill round) pays for the ordered scan.
    counts = f"SELECT count(*) FILTER (WHERE NOT reread), count(*) FILTER (WHERE reread) FROM {rows}"  # nosec
    new_rows, reread_rows = conn.run(counts, **params)[0]
    if new_rows + reread_rows <= max_rows:
        return None
    if reread_rows:
        logger.info("overlap rows read again count against the cap", rows=reread_rows,
                    max_batch_rows=max_rows)
    found = conn.run(f"SELECT stamp FROM {rows} WHERE NOT reread ORDER BY stamp "  # nosec B608
                     "OFFSET :offset LIMIT 1", offset=max(max_rows - reread_rows, 0), **params)
    if not found:
        return None
    cut = found[0][0]
    # Never an empty batch: when the rows before the cut are none (more than max_rows share the first
    # time, or the re-read rows fill the cap), take that whole time and cut at the next one.
    first = conn.run(f"SELECT min(stamp) FROM {rows} WHERE NOT reread", **params)[0][0]  # nosec B608
    if first == cut:
        later = conn.run(f"SELECT min(stamp) FROM {rows} WHERE NOT reread AND stamp > :cut",  # nosec B608
                         cut=cut, **params)[0][0]
        return later
    return cut


@dataclass(frozen=True)
class OverlapRereads:
    """What tells the rows of the overlap window a run reads again: per table the window's lower bound
    (``lows``: previous high - overlap) and the previous snapshot's xmin (``prev_xmins``), and the
    current snapshot's xid epoch base and xmax (the same 64-bit widening as ``snapshot.full_xid_sql``)."""
    lows: dict
    prev_xmins: dict
    xid_base: int
    cur_xmax: int

    @staticmethod
    def landed_sql(prev_xmin_param):
        """SQL: the row's transaction certainly finished before the previous snapshot (bound values)."""
        full = ("(CAST(:xid_base AS bigint) + xmin::text::bigint - CASE WHEN CAST(:xid_base AS bigint) "
                "+ xmin::text::bigint > CAST(:cur_xmax AS bigint) THEN 4294967296 ELSE 0 END)")
        return f"{full} < CAST(:{prev_xmin_param} AS bigint)"
