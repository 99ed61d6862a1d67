"""Segment checksums over id ranges, computed inside each database, narrowed to the differing ids.

As data-diff does: both databases sum a 64-bit row hash per segment of ``2**SEGMENT_BITS`` consecutive
ids over the whole table (one scan each; only ``(segment, count, sum)`` travels, a few dozen rows at
x100: the common case, a table that matches, ends there); a segment whose count or sum differs is split
at ``2**FINE_BITS`` ids over its id range only (an index range scan), and only the rows of the fine
segments that still differ are read (``id, h``) and compared one by one. Rows cost nothing to move
unless they differ, and a difference costs no second pass over the table. (Grouping by a coarse segment
costs about 5% more than a plain sum; a second grouped pass over the whole table, as a plain first level
then needs, costs as much again: docs/BENCHMARKS.md.)

Ids are shifted by 2**31 before the segment is taken, so a negative id (int4) falls in a segment of its own.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from utils.verify.pairs import Pair

SEGMENT_BITS = 16
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


def _rows_sql(relation: str) -> str:
    return f"SELECT id, h FROM ({relation}) r WHERE id >= :lo AND id < :hi"  # nosec B608


def _bounds(segment: int, bits: int) -> Tuple[int, int]:
    lo = (segment << bits) - ID_SHIFT
    return lo, lo + (1 << bits)


def _as_map(rows: List[List[Any]]) -> Dict[int, Tuple[int, int]]:
    return {int(seg): (int(count), int(total)) for seg, count, total in rows}


class Sides:
    """The two open connections (``source``, ``warehouse``), each in its own transaction; ``both``
    runs one statement per side at the same time (two threads: each connection is used by one)."""

    def __init__(self, source: Any, warehouse: Any) -> None:
        self.conns = {"source": source, "warehouse": warehouse}
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify")

    def both(self, pair: Pair, make_sql: Callable[[str], str],
             **params: Any) -> Tuple[List[List[Any]], List[List[Any]]]:
        futures = {side: self.pool.submit(self.conns[side].run, make_sql(pair.relation(side)), **params)
                   for side in self.conns}
        return futures["source"].result(), futures["warehouse"].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _differing_segments(sides: Sides, pair: Pair, bits: int, lo: Optional[int] = None,
                        hi: Optional[int] = None) -> Tuple[List[int], int]:
    """``(segments, source rows)``: the segments whose (count, sum) differ between the sides, and the
    source's row count over the range (the whole table when ``lo`` is None)."""
    params = {} if lo is None else {"lo": lo, "hi": hi}
    source, warehouse = sides.both(pair, lambda rel: _segments_sql(rel, bits, lo is not None), **params)
    source_map, warehouse_map = _as_map(source), _as_map(warehouse)
    differing = sorted(seg for seg in source_map.keys() | warehouse_map.keys()
                       if source_map.get(seg) != warehouse_map.get(seg))
    return differing, sum(count for count, _ in source_map.values())


def compare(sides: Sides, pair: Pair) -> RowDiff:
    """Compare one pair; return its RowDiff. ``matched`` is the source's row count minus the source
    rows found different (rows outside differing segments are equal by their checksums)."""
    diff = RowDiff()
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
    source_rows, warehouse_rows = sides.both(pair, _rows_sql, lo=lo, hi=hi)
    source, warehouse = dict(source_rows), dict(warehouse_rows)
    for row_id in sorted(source.keys() | warehouse.keys()):
        if row_id not in warehouse:
            diff.source_only.append(row_id)
        elif row_id not in source:
            diff.warehouse_only.append(row_id)
        elif source[row_id] != warehouse[row_id]:
            diff.differing.append(row_id)
