"""Segment checksums over id ranges, computed inside each database, narrowed to the differing ids.

As data-diff does: both databases first sum a 64-bit row hash over the whole table (one scan each,
only ``(count, sum)`` travels: the common case, a table that matches, ends there); when the sums
differ, per segment of ``2**SEGMENT_BITS`` consecutive ids (only ``(segment, count, sum)`` travels); a
segment whose count or sum differs is split again at ``2**FINE_BITS`` ids, and only the rows of the
segments that still differ are read (``id, h``) and compared one by one. Rows cost nothing to move
unless they differ. (A grouped sum costs about twice a plain one, hence the first level.)

Ids are shifted by 2**31 before the segment is taken, so a negative id (int4) falls in a segment of its own.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from pg8000.native import Connection

from utils.verify.pairs import Pair

SEGMENT_BITS = 12
FINE_BITS = 6
ID_SHIFT = 2 ** 31


@dataclass
class RowDiff:
    """The ids that differ between the two sides of one pair (sorted): only in the source, only in the
    warehouse, in both with different values; ``matched`` counts the rows equal on both sides."""
    source_only: List[int] = field(default_factory=list)
    warehouse_only: List[int] = field(default_factory=list)
    differing: List[int] = field(default_factory=list)
    matched: int = 0


def _segments_sql(relation: str, bits: int, ranged: bool) -> str:
    where = " WHERE id >= :lo AND id < :hi" if ranged else ""
    # relation and bits are this package's constants, never input.
    return (f"SELECT (id::bigint + {ID_SHIFT}) >> {int(bits)} AS seg, count(*), sum(h) "  # nosec B608
            f"FROM ({relation}) r{where} GROUP BY 1")


def _totals_sql(relation: str) -> str:
    return f"SELECT count(*), coalesce(sum(h), 0) FROM ({relation}) r"  # nosec B608


def _rows_sql(relation: str) -> str:
    return f"SELECT id, h FROM ({relation}) r WHERE id >= :lo AND id < :hi"  # nosec B608


def _bounds(segment: int, bits: int) -> Tuple[int, int]:
    lo = (segment << bits) - ID_SHIFT
    return lo, lo + (1 << bits)


def _as_map(rows: Iterable[Sequence[Any]]) -> Dict[int, Tuple[int, int]]:
    return {int(seg): (int(count), int(total)) for seg, count, total in rows}


class Sides:
    """The two open connections (``source``, ``warehouse``), each in its own transaction; ``both``
    runs one statement per side at the same time (two threads: each connection is used by one)."""

    def __init__(self, source: Connection, warehouse: Connection) -> None:
        self.conns = {"source": source, "warehouse": warehouse}
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify")

    def both(self, pair: Pair, make_sql: Callable[[str], str], **params: Any) -> Tuple[Any, Any]:
        """(source rows, warehouse rows) of ``make_sql(relation)`` on each side."""
        futures = {side: self.pool.submit(self.conns[side].run, make_sql(pair.relation(side)), **params)
                   for side in self.conns}
        return futures["source"].result(), futures["warehouse"].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _differing_segments(sides: Sides, pair: Pair, bits: int, lo: Optional[int] = None,
                        hi: Optional[int] = None) -> Tuple[List[int], int]:
    """``(segments, source rows)``: the segments whose (count, sum) differ between the sides, and the
    source's row count over the range."""
    params = {} if lo is None else {"lo": lo, "hi": hi}
    source, warehouse = sides.both(pair, lambda rel: _segments_sql(rel, bits, lo is not None), **params)
    source, warehouse = _as_map(source), _as_map(warehouse)
    differing = sorted(seg for seg in source.keys() | warehouse.keys()
                       if source.get(seg) != warehouse.get(seg))
    return differing, sum(count for count, _ in source.values())


def compare(sides: Sides, pair: Pair) -> RowDiff:
    """Compare one pair; return its RowDiff. ``matched`` is the source's row count minus the source
    rows found different (rows outside differing segments are equal by their checksums)."""
    diff = RowDiff()
    source, warehouse = sides.both(pair, _totals_sql)
    if source == warehouse:
        diff.matched = int(source[0][0])
        return diff
    segments, source_total = _differing_segments(sides, pair, SEGMENT_BITS)
    for segment in segments:
        lo, hi = _bounds(segment, SEGMENT_BITS)
        for fine in _differing_segments(sides, pair, FINE_BITS, lo, hi)[0]:
            fine_lo, fine_hi = _bounds(fine, FINE_BITS)
            _compare_rows(sides, pair, fine_lo, fine_hi, diff)
    different = len(diff.source_only) + len(diff.differing)
    diff.matched = int(source_total) - different
    return diff


def _compare_rows(sides: Sides, pair: Pair, lo: int, hi: int, diff: RowDiff) -> None:
    source, warehouse = sides.both(pair, _rows_sql, lo=lo, hi=hi)
    source, warehouse = dict(source), dict(warehouse)
    for row_id in sorted(source.keys() | warehouse.keys()):
        if row_id not in warehouse:
            diff.source_only.append(row_id)
        elif row_id not in source:
            diff.warehouse_only.append(row_id)
        elif source[row_id] != warehouse[row_id]:
            diff.differing.append(row_id)
