"""What one ingest run reads, fixed by one snapshot: the window (batch time, the source's wall clock and
zone, per-table bounds), the snapshot shared with helper connections, and the COPY statement of a table.

All bounds are source wall-clock times (raw ``last_updated`` values). Which rows a run takes, per table
(``prev`` = this table's entry in the state pointer): ``last_updated < high`` where ``high = max(prev.high,
now + the largest UTC offset in play)``, and, after the first run, ``last_updated >= low = min(prev.high,
prev.utc + the smallest offset in play) - overlap`` (``utils.ingest.zones``) minus the rows the previous
run already landed (``last_updated < prev.high`` and written by a transaction that had certainly finished
before ``prev.snapshot``: full 64-bit xid below its xmin).
Beside the window, a run takes the rows of keys new since the previous run below ``high`` whatever their
``last_updated``, and the rows at or after ``future_from`` (``utils.ingest.backdated``).
"""
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pg8000.native import identifier

from utils.catalog.source import PRIMARY_KEYS, SOURCE_SCHEMAS, check_source_table
from utils.catalog.source_schema import check_source_schema
from utils.db.connection import end_quietly
from utils.errors import ConfigError, CorruptFileError, TotesysError
from utils.format_time import format_time, parse_time
from utils.contracts import IngestState
from utils.ingest.bounded import BOUNDED_TABLES, OverlapRereads, plan_cuts
from utils.ingest.zones import Clock, table_windows
from utils.logger import get_logger

XID_WRAP = 1 << 32
# What pg_export_snapshot() returns ('%08X-%08X-%d'); SET TRANSACTION SNAPSHOT takes no bound value,
# so the id is checked against this before it is placed in the statement.
SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")
# The zone of a state pointer written before ingest recorded one: sessions were forced to UTC then.
LEGACY_TIMEZONE = "UTC"
# One statement fixes the run: batch time (UTC, DB clock), the source's wall clock and zone, the
# snapshot, and the zone's daylight-saving shift (largest minus smallest UTC offset over this year's
# month starts and now, in seconds) that the overlap must cover.
WINDOW_SQL = (
    "SELECT now() AT TIME ZONE 'UTC', localtimestamp, current_setting('TimeZone'), "
    "pg_current_snapshot()::text, "
    "(SELECT (max(o) - min(o))::int FROM (SELECT extract(timezone FROM now()) AS o UNION ALL "
    "SELECT extract(timezone FROM date_trunc('year', now()) + m * interval '1 month') "
    "FROM generate_series(0, 12) AS m) AS offsets)")


logger = get_logger("ingest")


@dataclass(frozen=True)
class Window:
    """What one run's snapshot transaction fixed.

    ``batch_time``: DB clock in UTC (keys, batch id). ``timezone``: the source's TimeZone setting.
    ``highs``: ``{table: upper bound}``, ``lows``: ``{table: lower bound}`` (tables with a previous
    entry) and ``prev_tables``: the state pointer's ``tables`` (every table; an entry written before
    ``utc`` was recorded has its ``high`` converted into ``timezone``), all in source wall-clock time.
    ``ignored_columns``: ``{table: [column]}`` the source has beyond the spec. ``future_from``:
    ``{table: source wall-clock time}`` at and after which a row is a future row (``utils.ingest.backdated``).
    ``wall_clock``: the source's wall clock; ``offsets``: ``{table: UTC offsets in seconds}`` to record
    (``utils.ingest.zones``). ``planned_cuts``: the later cuts of a backfill (``utils.ingest.bounded``).
    """
    batch_time: datetime
    timezone: str
    snapshot: str
    highs: dict
    prev_tables: dict
    overlap_seconds: int
    ignored_columns: dict
    more_waiting: bool = False
    future_from: dict = field(default_factory=dict)
    lows: dict = field(default_factory=dict)
    wall_clock: Optional[datetime] = None
    offsets: dict = field(default_factory=dict)
    planned_cuts: Tuple[datetime, ...] = ()


def open_window(conn: Any, tables: Sequence[str], state: IngestState, overlap_seconds: int,
                export: bool = False, max_batch_rows: int = 0, future_tolerance_seconds: Optional[int] = None
                ) -> Tuple[Window, Optional[str], datetime]:
    """Read the run's bounds in ``conn``'s open snapshot transaction; return ``(Window, exported
    snapshot id or None, the source's wall clock)``.

    With ``max_batch_rows`` the order/payment tables' bound is the batch's cut when more new rows wait
    than that (``utils.ingest.bounded``); the Window then says ``more_waiting``. With
    ``future_tolerance_seconds`` (None: no future rows taken) each table's ``future_from`` is its
    uncut bound plus the zone's daylight-saving shift plus that tolerance.

    Raises ConfigError when ``overlap_seconds`` is below the zone's daylight-saving shift (rows
    stamped in a repeated hour could fall below the window), SchemaDriftError (nothing read yet).
    Logs one WARNING per ignored source column and one when the zone changed since ``state``.
    """
    row = conn.run(WINDOW_SQL + (", pg_export_snapshot()" if export else ""))[0]
    batch_time, wall_now, zone, snapshot, dst_shift = row[:5]
    if overlap_seconds < dst_shift:
        raise ConfigError(
            f"INGEST_OVERLAP_SECONDS={overlap_seconds} is below the daylight-saving shift of the source "
            f"time zone {zone!r} ({dst_shift} s): rows written in the hour repeated after a fall-back "
            f"would be missed; set it to at least {dst_shift}")
    ignored = check_source_schema(conn, tables)
    for table, columns in ignored.items():
        for column in columns:
            logger.warning("source column not in the spec: ignored", table=table, column=column)
    prev_tables = _prev_tables_in_zone(conn, state, zone)
    # A clock whose offset moved (a zone change, daylight saving) stamps rows in every offset in play:
    # the window covers them all, and the bound never moves back (utils.ingest.zones).
    prev_zone = state.get("timezone", LEGACY_TIMEZONE) if prev_tables else zone
    xmin = snapshot_bounds(snapshot)[0]
    carried = {table for table in tables if table in prev_tables and prev_tables[table].get("snapshot")
               and xmin < snapshot_bounds(prev_tables[table]["snapshot"])[1]}
    windows = table_windows(conn, tables, prev_tables, Clock(batch_time, wall_now), (prev_zone, zone),
                            overlap_seconds, Clock.from_state(state), carried)
    highs = {table: windows[table].high for table in tables}
    lows: Dict[str, datetime] = {table: low for table in tables if (low := windows[table].low) is not None}
    future_from = {}
    if future_tolerance_seconds is not None:
        # The wall clock has shown at most ``high`` + the shift (it goes back at a fall-back): a row
        # stamped later than that plus the tolerance was not stamped by the source's clock.
        ahead = timedelta(seconds=dst_shift + future_tolerance_seconds)
        future_from = {table: highs[table] + ahead for table in tables}
    lower = {table: parse_time(prev_tables[table]["high"]) for table in tables if table in prev_tables}
    planned = plan_cuts(conn, tables, lower, dict(highs), max_batch_rows,
                        _rereads(prev_tables, lows, snapshot), _planned_cuts(state, zone))
    cut = planned.cut
    if cut is not None:
        for table in tables:
            if table in BOUNDED_TABLES:
                highs[table] = max(min(highs[table], cut), lower.get(table, cut))
        logger.info("batch cut: more rows wait for the next batch", cut=format_time(cut),
                    max_batch_rows=max_batch_rows)
    window = Window(batch_time, zone, snapshot, highs, prev_tables, overlap_seconds, ignored,
                    more_waiting=cut is not None, future_from=future_from, lows=lows, wall_clock=wall_now,
                    offsets={table: sorted(windows[table].offsets) for table in tables},
                    planned_cuts=planned.planned if cut is not None else ())
    return window, (row[5] if export else None), wall_now


def _planned_cuts(state: IngestState, zone: str) -> Tuple[datetime, ...]:
    """The cuts the previous round planned (``utils.ingest.bounded.plan_cuts``), when its zone is ``zone``
    (a plan in another zone's wall-clock time is dropped: the round plans again)."""
    if state.get("timezone") != zone:
        return ()
    return tuple(parse_time(cut) for cut in state.get("planned_cuts") or ())


def _rereads(prev_tables: Dict[str, Dict[str, Any]], lows: Dict[str, datetime],
             snapshot: str) -> OverlapRereads:
    """The OverlapRereads of the tables with a previous high (window lower bounds ``lows``), for
    ``batch_cut``."""
    cur_xmax = snapshot_bounds(snapshot)[1]
    return OverlapRereads(
        lows=dict(lows),
        prev_xmins={table: snapshot_bounds(prev_tables[table]["snapshot"])[0] for table in lows},
        xid_base=cur_xmax >> 32 << 32, cur_xmax=cur_xmax)


def _prev_tables_in_zone(conn: Any, state: IngestState, zone: str) -> Dict[str, Dict[str, Any]]:
    """The state pointer's ``tables``, one WARNING when the zone changed since ``state``. The entries
    written before ``utc`` was recorded get each ``high`` (and ``future_from``) converted into ``zone``
    by the server (a state without a zone: UTC); the others keep their raw bounds (``utils.ingest.zones``
    covers the offsets of both zones)."""
    prev_tables = {table: dict(entry) for table, entry in state.get("tables", {}).items()}
    old_zone = state.get("timezone", LEGACY_TIMEZONE)
    if not prev_tables or old_zone == zone:
        return prev_tables
    names = sorted(name for name, entry in prev_tables.items() if not entry.get("utc"))
    if not names:
        logger.warning("source time zone changed: the window covers the offsets of both zones",
                       old_timezone=old_zone, timezone=zone)
        return prev_tables
    stamps = [(name, bound) for name in names for bound in ("high", "future_from")
              if prev_tables[name].get(bound)]
    converted = conn.run(
        "SELECT (CAST(high AS timestamp) AT TIME ZONE CAST(:old AS text)) AT TIME ZONE CAST(:new AS text) "
        "FROM unnest(CAST(:highs AS text[])) WITH ORDINALITY AS h(high, n) ORDER BY n",
        old=old_zone, new=zone, highs=[prev_tables[name][bound] for name, bound in stamps])
    for (name, bound), (value,) in zip(stamps, converted):
        prev_tables[name][bound] = format_time(value)
    logger.warning("source time zone changed: previous bounds converted", old_timezone=old_zone,
                   timezone=zone, tables=names)
    return prev_tables


def largest_first(conn: Any, tables: Sequence[str]) -> List[str]:
    """``tables`` ordered by their size on disk, largest first (ties keep their order), so that
    parallel readers finish together."""
    sizes = dict(conn.run(
        "SELECT c.relname::text, pg_relation_size(c.oid) FROM pg_class c "
        "WHERE c.relkind = 'r' AND pg_table_is_visible(c.oid) AND c.relname = ANY(CAST(:names AS text[]))",
        names=list(tables)))
    return sorted(tables, key=lambda table: -sizes.get(table, 0))


def import_snapshot(conn: Any, snapshot_id: Optional[str]) -> None:
    """Open a REPEATABLE READ READ ONLY transaction on ``conn`` that sees the exported snapshot
    ``snapshot_id`` (the exporting transaction must still be open).

    Raises TotesysError for an id that is not what pg_export_snapshot returns (it is placed in
    the SQL text, so nothing else may pass), the server's error for an unknown one.
    """
    if not isinstance(snapshot_id, str) or not SNAPSHOT_ID.fullmatch(snapshot_id):
        raise TotesysError(f"malformed exported snapshot id {snapshot_id!r}")
    conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        # The id matched SNAPSHOT_ID above: hex digits, dashes and digits only.
        conn.run(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
    except BaseException:
        end_quietly(conn)
        raise


def snapshot_bounds(snapshot_text: str) -> Tuple[int, int]:
    """Return (xmin, xmax) of a pg_snapshot text 'xmin:xmax:xip,...' as ints."""
    try:
        xmin, xmax, _ = snapshot_text.split(":", 2)
        return int(xmin), int(xmax)
    except (AttributeError, ValueError):
        raise CorruptFileError(f"ingest state holds a malformed snapshot {snapshot_text!r}") from None


def setting(name: str, sql_type: str) -> str:
    """SQL for the transaction's setting ``totesys.<name>`` as ``sql_type``, read once per statement.

    An uncorrelated scalar sub-query is an InitPlan: evaluated once, where ``current_setting(...)`` in a
    WHERE clause is a stable function call PostgreSQL evaluates again for every row a scan filters (with
    its cast: a quarter of a bounded table's COPY, measured, docs/BENCHMARKS.md). ``name`` and ``sql_type``
    are fixed by the callers, never input."""
    return f"(SELECT current_setting('totesys.{name}')::{sql_type})"


def full_xid_sql(raw_xid_sql: str) -> str:
    """SQL for the 64-bit xid of a 32-bit xid (e.g. ``xmin::text::bigint``).

    Uses the epoch of the current snapshot's xmax (settings ``totesys.xid_base`` = epoch << 32 and
    ``totesys.cur_xmax``): a raw xid that would land after xmax belongs to the previous epoch.
    """
    base, cur = setting("xid_base", "bigint"), setting("cur_xmax", "bigint")
    return (f"({base} + {raw_xid_sql} - CASE WHEN {base} + {raw_xid_sql} > {cur} "
            f"THEN {XID_WRAP} ELSE 0 END)")


def select_list(table_name: str) -> str:
    """Return the quoted column list of a source table in physical order (allow-listed names only)."""
    check_source_table(table_name)
    return ", ".join(identifier(name) for name in SOURCE_SCHEMAS[table_name].names)


def copy_sql(table: str, incremental: bool, backdated: bool = False, future: bool = False,
             after_future: bool = False) -> str:
    """The COPY statement for one table; bounds come from the transaction's totesys.* settings.

    The window: ``last_updated < high`` and, when ``incremental``, at or after ``low`` and not landed by
    the previous run. With ``backdated``, also the rows below ``high`` of the new keys (settings
    ``new_first``/``new_last``); with ``future``, also the rows at or after ``future_from`` except,
    with ``after_future``, those the previous run landed as future rows (``utils.ingest.backdated``).
    """
    check_source_table(table)
    updated = identifier("last_updated")
    landed = f"{full_xid_sql('xmin::text::bigint')} < {setting('prev_xmin', 'bigint')}"
    below_high = f"{updated} < {setting('high', 'timestamp')}"
    where = below_high
    if incremental:
        where += (f" AND {updated} >= {setting('low', 'timestamp')}"
                  f" AND NOT ({updated} < {setting('prev_high', 'timestamp')} AND {landed})")
    if backdated:
        # An uncorrelated IN sub-query: expanded once into a hash, not re-parsed per row.
        key = identifier(PRIMARY_KEYS[table])
        new_key = (f"{key} IN (SELECT generate_series(r.f, r.l) FROM unnest("  # nosec B608 - quoted name
                   "current_setting('totesys.new_first')::integer[], "
                   "current_setting('totesys.new_last')::integer[]) AS r(f, l))")
        where = f"({below_high} AND (({where}) OR {new_key}))"
    if future:
        ahead = f"{updated} >= {setting('future_from', 'timestamp')}"
        if after_future:
            ahead += (f" AND NOT ({updated} >= {setting('prev_future_from', 'timestamp')}"
                      f" AND {landed})")
        where = f"({where}) OR ({ahead})"
    # Identifiers come from the allow-list and are quoted; values arrive through set_config.
    return (f"COPY (SELECT {select_list(table)} FROM {identifier(table)} WHERE {where}) "  # nosec B608
            "TO STDOUT WITH (FORMAT csv, HEADER false)")
