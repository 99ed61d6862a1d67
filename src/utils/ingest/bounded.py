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

One plan per backfill (issue 24): the cut needs the rows in time order, a sort of every waiting row, and
repeating it each round made a backfill's cost grow with the square of its size. So the round that finds
more rows waiting than MAX_BATCH_ROWS counts them once more in time buckets (one scan, a hash aggregate, no
sort), and plans every later cut from those counts (``plan_cuts``); the state pointer carries the plan
(``planned_cuts``), and each later round takes its next cut after one count of the rows below it (the
guard: when rows written since the plan push it over the cap, the round plans afresh). Any cut is a valid
``high`` (it only has to lie at or below the run's ``localtimestamp``: docs/DESIGN.md), so a stale plan can
cost batch size, never a row.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from pg8000.native import identifier

from utils.catalog.source import check_source_table
from utils.format_time import format_time
from utils.logger import get_logger

logger = get_logger("ingest")

BOUNDED_TABLES = ("sales_order", "purchase_order", "transaction", "payment")
# The plan counts the waiting rows in about this many time buckets per batch: a batch it plans holds at
# least MAX_BATCH_ROWS less one bucket (evenly spread rows: 1/64 of it).
BUCKETS_PER_BATCH = 64
MIN_BUCKETS = 1024
EPOCH = datetime(1970, 1, 1)
Bound = Union[datetime, Dict[str, datetime]]


@dataclass(frozen=True)
class BatchCut:
    """A round's cut (None: every waiting row fits in the batch) and the ``planned`` later cuts, in time
    order, for the next rounds of the backfill (``plan_cuts``)."""
    cut: Optional[datetime]
    planned: Tuple[datetime, ...] = ()


def batch_cut(conn: Any, tables: Sequence[str], lower_bounds: Mapping[str, datetime], upper: Bound,
              max_rows: int, rereads: Optional["OverlapRereads"] = None) -> Optional[datetime]:
    """The cut of this batch (a source wall-clock time, below ``upper``), or None when every row the
    window reads fits in ``max_rows`` (or ``max_rows`` is 0: no cap).

    ``tables``: the bounded tables this run reads; ``lower_bounds``: {table: previous high} (absent: the
    table's first run, no lower bound); ``upper``: the run's upper bound, one time or {table: time}. Runs in
    the caller's snapshot.
    ``rereads`` (an OverlapRereads, optional): the rows of the overlap window below each previous high that
    the window will read again (not certainly landed before) count against the cap first; they cannot be
    deferred (they lie below every bound this run can choose), so when they alone fill the cap the batch
    takes only the first new time."""
    window = _window(tables, lower_bounds, upper, rereads)
    if window is None or not max_rows:
        return None
    rows, params = window
    new_rows, reread_rows = _counts(conn, rows, params)[:2]
    if new_rows + reread_rows <= max_rows:
        return None
    return _ordered_cut(conn, rows, params, max_rows, reread_rows)


def plan_cuts(conn: Any, tables: Sequence[str], lower_bounds: Mapping[str, datetime], upper: Bound,
              max_rows: int, rereads: Optional["OverlapRereads"] = None,
              planned: Sequence[datetime] = ()) -> BatchCut:
    """``batch_cut`` for one round of a backfill, with the plan of the later rounds (arguments as there).

    ``planned``: the cuts the previous round planned. The first of them above every lower bound is this
    round's cut when the rows the window reads below it are at most ``max_rows`` (one count); the rest
    stay planned. Otherwise, when more rows wait than ``max_rows``, the waiting rows are counted in time
    buckets and every cut of the backfill is planned from them: each batch whole buckets, at most
    ``max_rows`` rows (this one less the re-read rows); where one bucket alone is over the cap (rows
    sharing a time) the plan ends, and a round with no plan finds its cut by ``batch_cut``'s ordered
    search."""
    window = _window(tables, lower_bounds, upper, rereads)
    if window is None or not max_rows:
        return BatchCut(None)
    rows, params = window
    # the bounded tables' previous highs (the small tables are read up to now: not a bound of the plan)
    floor = max((bound for table, bound in lower_bounds.items()
                 if table in tables and table in BOUNDED_TABLES), default=None)
    ahead = [cut for cut in planned if floor is None or cut > floor]
    if ahead:
        held = conn.run(f"SELECT count(*) FROM {rows} WHERE stamp < :planned_cut",  # nosec B608
                        planned_cut=ahead[0], **params)[0][0]
        if 0 < held <= max_rows:
            logger.info("batch cut as planned", cut=format_time(ahead[0]), rows=held, planned=len(ahead) - 1)
            return BatchCut(ahead[0], tuple(ahead[1:]))
        logger.info("the planned cut no longer fits: planned again", cut=format_time(ahead[0]), rows=held,
                    max_batch_rows=max_rows)
    new_rows, reread_rows, first, last = _counts(conn, rows, params)
    if new_rows + reread_rows <= max_rows:
        return BatchCut(None)
    cuts = _bucket_plan(conn, rows, params, max_rows - reread_rows, max_rows, (first, last, new_rows))
    if cuts:
        logger.info("backfill planned", batches=len(cuts) + 1, rows=new_rows, max_batch_rows=max_rows)
        return BatchCut(cuts[0], tuple(cuts[1:]))
    return BatchCut(_ordered_cut(conn, rows, params, max_rows, reread_rows))


def _window(tables: Sequence[str], lower_bounds: Mapping[str, datetime], upper: Bound,
            rereads: Optional["OverlapRereads"]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """The SQL of the rows the window of the bounded tables among ``tables`` reads (``stamp``, and
    ``reread``: below the previous high) and its bound values; None when no bounded table is read."""
    tables = [table for table in tables if table in BOUNDED_TABLES]
    if not tables:
        return None
    uppers = upper if isinstance(upper, dict) else dict.fromkeys(tables, upper)
    parts: List[str] = []
    params: Dict[str, Any] = {}
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
    return "(" + " UNION ALL ".join(parts) + ") AS window_rows", params


def _counts(conn: Any, rows: str, params: Dict[str, Any]) -> Tuple[int, int, Any, Any]:
    """(new rows, re-read rows, first and last new time) of the window ``rows``: one scan."""
    counts = ("SELECT count(*) FILTER (WHERE NOT reread), count(*) FILTER (WHERE reread), "  # nosec B608
              f"min(stamp) FILTER (WHERE NOT reread), max(stamp) FILTER (WHERE NOT reread) FROM {rows}")
    new_rows, reread_rows, first, last = conn.run(counts, **params)[0]
    return new_rows, reread_rows, first, last


def _ordered_cut(conn: Any, rows: str, params: Dict[str, Any], max_rows: int,
                 reread_rows: int) -> Optional[datetime]:
    """The exact cut by an ordered search: the time of the (max_rows - reread_rows + 1)-th new row, or the
    next later time when no row lies before it (never an empty batch)."""
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


def _bucket_plan(conn: Any, rows: str, params: Dict[str, Any], first_budget: int, max_rows: int,
                 extent: Tuple[datetime, datetime, int]) -> List[datetime]:
    """The planned cuts of the new rows of ``rows`` (``extent``: their first and last time and number):
    counted in buckets of whole microseconds of source time, each batch as many whole buckets as fit its
    budget (the first ``first_budget``, the others ``max_rows``), each cut a bucket's first microsecond.
    Empty when the first bucket alone is over the first budget."""
    first, last, total = extent
    if first_budget <= 0:
        return []
    start = _micros(first)
    span = _micros(last) - start + 1
    buckets = max(MIN_BUCKETS, BUCKETS_PER_BATCH * -(-total // max_rows))
    width = max(1, -(-span // buckets))
    # One scan and a hash aggregate; the epoch in microseconds is exact in a double below 2**53.
    counted = conn.run(
        "SELECT ((CAST(extract(epoch FROM stamp) * 1000000 AS bigint) - CAST(:start AS bigint)) "  # nosec
        f"/ CAST(:width AS bigint)) AS bucket, count(*) FROM {rows} WHERE NOT reread GROUP BY 1 ORDER BY 1",
        start=start, width=width, **params)
    cuts: List[datetime] = []
    budget, taken = first_budget, 0
    for bucket, count in counted:
        if taken and taken + count > budget:
            cuts.append(EPOCH + timedelta(microseconds=start + bucket * width))
            budget, taken = max_rows, 0
        if not taken and count > budget:
            break  # one bucket over the cap: the rounds from here plan again
        taken += count
    return cuts


def _micros(stamp: datetime) -> int:
    """Microseconds from the epoch of a naive source wall-clock time (as SQL's extract(epoch) counts)."""
    return (stamp - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class OverlapRereads:
    """What tells the rows of the overlap window a run reads again: per table the window's lower bound
    (``lows``: previous high - overlap) and the previous snapshot's xmin (``prev_xmins``), and the
    current snapshot's xid epoch base and xmax (the same 64-bit widening as ``snapshot.full_xid_sql``)."""
    lows: Dict[str, datetime]
    prev_xmins: Dict[str, int]
    xid_base: int
    cur_xmax: int

    @staticmethod
    def landed_sql(prev_xmin_param: str) -> str:
        """SQL: the row's transaction certainly finished before the previous snapshot (bound values)."""
        full = ("(CAST(:xid_base AS bigint) + xmin::text::bigint - CASE WHEN CAST(:xid_base AS bigint) "
                "+ xmin::text::bigint > CAST(:cur_xmax AS bigint) THEN 4294967296 ELSE 0 END)")
        return f"{full} < CAST(:{prev_xmin_param} AS bigint)"
