"""The source clock's offset moves: each table's window covers every UTC offset the clock had since the
table's previous run (docs/DESIGN.md, "The source clock's offset moves").

totesys stamps ``last_updated`` with the wall clock of the writer's session: UTC plus the offset of the
session's zone at that moment. That offset moves between two runs when daylight saving begins or ends, or
when the database's zone is changed (``ALTER DATABASE ... SET timezone``; sessions opened before keep the
old one). A row written at UTC time ``t`` is stamped ``t + o`` for some offset ``o`` "in play" (set ``O``),
so the rows written since the previous run's snapshot (UTC ``prev.utc``), late commits up to the overlap
before it included, are stamped within ``[prev.utc + min(O) - overlap, now + max(O))``. Per table
(``prev`` = its entry in the state pointer; every bound a raw stamp, never converted between zones):

    low  = min(prev.high, prev.utc + min(O)) - overlap
    high = max(prev.high, now + max(O))

``prev.high`` in ``low`` keeps the rows the previous run left at or above its bound (a batch cut, a row
stamped ahead of the clock) in the window; in ``high`` it keeps the bound from moving back. ``O`` is the
union of the offsets recorded with ``prev`` (those in play during its window: a late transaction of a
session in an older zone), the offsets the previous run's zone and the current zone had at any moment of
``[prev.utc - overlap, now]``, and the offsets the two snapshots measured (wall clock minus UTC). The state
records per table ``utc`` (the UTC time of the snapshot the table was read in) and ``offsets`` (this run's
zones over its interval; the recorded ones too only while a transaction that began before the previous
snapshot is still open, so a move is forgotten one run after it is past and no late transaction of the
old zone can still commit), and per run ``clock`` (the snapshot's readings, UTC and wall). A first run
takes ``O`` over the last overlap.

A state entry without ``utc`` (written before this module) keeps the earlier rule (its ``high`` converted
into the current zone by ``utils.ingest.snapshot``): ``low = prev.high - overlap``, ``high = max(wall
clock, prev.high)``; the run writes the new keys, so the rule applies from the next run on.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import AbstractSet, Any, Dict, FrozenSet, Iterable, Mapping, Optional

from utils.format_time import parse_time

# The distinct offsets (seconds) of the zones at every moment of [since, until] (UTC): sampled hourly, or
# in 1000 steps over a longer interval, and at ``until``. A zone is a name or a POSIX spec the server takes.
OFFSETS_SQL = (
    "SELECT DISTINCT extract(epoch FROM ((t AT TIME ZONE 'UTC') AT TIME ZONE z) - t)::int "
    "FROM unnest(CAST(:zones AS text[])) AS z, "
    "(SELECT generate_series(CAST(:since AS timestamp), CAST(:until AS timestamp), "
    "greatest(interval '1 hour', (CAST(:until AS timestamp) - CAST(:since AS timestamp)) / 1000)) "
    "UNION SELECT CAST(:until AS timestamp)) AS moments(t)")


@dataclass(frozen=True)
class Clock:
    """One snapshot's readings of the source clock: ``utc`` (``now()`` in UTC) and ``wall``
    (``localtimestamp``, in the session's zone)."""
    utc: datetime
    wall: datetime

    @property
    def offset(self) -> int:
        """The UTC offset of the wall clock, in seconds."""
        return round((self.wall - self.utc).total_seconds())

    @staticmethod
    def from_state(state: Mapping[str, Any]) -> Optional["Clock"]:
        """The ``clock`` a state pointer recorded, or None (a state written before it was recorded)."""
        clock = state.get("clock")
        if not clock:
            return None
        return Clock(parse_time(clock["utc"]), parse_time(clock["wall"]))


@dataclass(frozen=True)
class TableWindow:
    """One table's window: ``low`` (None: the table's first run, no lower bound), ``high`` (exclusive),
    and the ``offsets`` (seconds) to record with the table for the next run."""
    low: Optional[datetime]
    high: datetime
    offsets: FrozenSet[int]


def offsets_over(conn: Any, zones: Iterable[str], since: datetime, until: datetime) -> FrozenSet[int]:
    """The UTC offsets (seconds) ``zones`` had at any moment of ``[since, until]`` (UTC times), by the
    server's own zone rules. Raises the server's error for a zone it does not know."""
    rows = conn.run(OFFSETS_SQL, zones=sorted(set(zones)), since=since, until=until)
    return frozenset(int(row[0]) for row in rows)


def table_windows(conn: Any, tables: Iterable[str], prev_tables: Mapping[str, Any], clock: Clock,
                  zones: Iterable[str], overlap_seconds: int, prev_clock: Optional[Clock] = None,
                  carried: AbstractSet[str] = frozenset()) -> Dict[str, TableWindow]:
    """``{table: TableWindow}`` for ``tables`` (see the module docstring).

    ``prev_tables``: the state pointer's entries (entries without ``utc`` already converted into the
    current zone); ``clock``: this snapshot's readings; ``zones``: the previous run's zone and the current
    one; ``prev_clock``: the previous run's readings (None when not recorded); ``carried``: the tables whose
    recorded offsets stay recorded (a transaction that began before their previous snapshot is still open:
    it may yet commit rows stamped in them). Runs one query per distinct interval start on ``conn`` (in
    the run's snapshot transaction).
    """
    overlap = timedelta(seconds=overlap_seconds)
    measured = {clock.offset} | ({prev_clock.offset} if prev_clock else set())
    over: Dict[datetime, FrozenSet[int]] = {}
    windows = {}
    for table in tables:
        prev = prev_tables.get(table)
        prev_utc = parse_time(prev["utc"]) if prev and prev.get("utc") else None
        since = (prev_utc or clock.utc) - overlap
        if since not in over:
            over[since] = offsets_over(conn, zones, since, clock.utc) | measured
        offsets = over[since]
        if not prev:
            windows[table] = TableWindow(None, clock.utc + timedelta(seconds=max(offsets)), offsets)
            continue
        prev_high = parse_time(prev["high"])
        if prev_utc is None:  # a state entry written before zones.py: the earlier rule
            windows[table] = TableWindow(prev_high - overlap, max(clock.wall, prev_high), offsets)
            continue
        in_play = offsets | frozenset(prev.get("offsets") or ())
        low = min(prev_high, prev_utc + timedelta(seconds=min(in_play))) - overlap
        high = max(prev_high, clock.utc + timedelta(seconds=max(in_play)))
        windows[table] = TableWindow(low, high, in_play if table in carried else offsets)
    return windows
