"""Re-sync (`totesys resync --tables T...`, execution input ``{"resync": [...]}``): the named source tables
are landed in full, their whole current state, as part of one ordinary batch in the run's snapshot.

Why: the incremental read takes rows stamped inside the window (``last_updated >= prev.high - overlap``);
an update stamped below it (a writer's clock behind, a back-dated ``last_updated``) is never seen by a
cursor. A full read lands it: the transform and the load treat the batch as any other, so a new version
is appended to the facts (versions the warehouse holds are skipped: the load deduplicates on id,
last_updated and values), a dimension row is upserted, and the table's deletions are detected as on every run.
Nothing else changes: the table's ``high``, its key set and the state pointer advance as in any run, and
the other tables are read incrementally. The event's other keys keep their meaning.
"""
from typing import Any, Iterable, List, Sequence, Tuple
from utils.catalog.source import SOURCE_TABLES, check_source_table
from utils.errors import InvalidEventError

RESYNC_KEY = "resync"


def resync_tables(event: Any) -> Tuple[str, ...]:
    """The tables ``event`` asks to re-sync, in SOURCE_TABLES order (empty when it asks for none).

    Raises InvalidEventError when ``resync`` is not a non-empty list of names, UnknownTableError for a
    name not in the allow-list.
    """
    if not isinstance(event, dict) or RESYNC_KEY not in event:
        return ()
    tables = event[RESYNC_KEY]
    if not isinstance(tables, list) or not tables:
        raise InvalidEventError("resync must be a non-empty list of source table names")
    for name in tables:
        check_source_table(name)
    return tuple(name for name in SOURCE_TABLES if name in tables)


def with_resync(tables: Sequence[str], resync: Iterable[str]) -> List[str]:
    """The run's tables with ``resync`` added (a re-sync, or an approval, of a table the event's
    ``tables_to_query`` leaves out would otherwise do nothing)."""
    return [name for name in SOURCE_TABLES if name in tables or name in resync]
