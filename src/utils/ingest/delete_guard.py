"""Guarded mass deletes: a run that would record more than ``MAX_DELETE_FRACTION`` (default 0.25) of a
table as deleted, or empty a table that had rows, holds that table's deletions instead of recording them.

A truncated or wrongly filtered source (a restore gone wrong, a mistaken ``DELETE``) would otherwise empty
the warehouse's current views within one run. Held deletions are not written to the batch's
``_deleted`` file, so nothing disappears from the warehouse; every other change of the run (and of
every other table) flows as usual. The table's stored key set becomes the current keys plus the held
ids, so every later run detects the same ids again and holds them again (one ERROR line and a
``DeletionsHeld`` metric per run: the alarm keeps ringing) while new ids are still tracked. A run whose
event approves the table (``{"approve_deletes": [table]}``: `totesys deletes --approve TABLE`) records
them, with whatever else that run deletes, and stores the plain current key set.

The ingest state pointer names the held deletions of the last run (``held_deletes``: {table: {"rows",
"table_rows"}}), which `totesys deletes` lists.

INGEST_MODE=cdc holds the same way (``utils.ingest.cdc.run``): each batch, for every table it changed or
that has deletions held, the ids to decide are those of the stored key set the source lacks (the held ones,
read as the cursor does, from the source's keys in a snapshot taken before the batch's end) with the batch's
own deletions (a TRUNCATE's too), less the ids inserted again; ``hold`` decides them as above. A bounded
batch (cut at MAX_BATCH_ROWS) stops before the source's present, so an id the source lacks may be a deletion
still to come: it decides only its own deletions and carries the holds before it (``still_held``: the ERROR
line and the metric again) to the next whole batch.
"""
import time
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from utils.catalog.source import SOURCE_TABLES, check_source_table
from utils.errors import InvalidEventError
from utils.logger import get_logger
from utils.metrics import NAMESPACE, SERVICE, emit

APPROVE_KEY = "approve_deletes"
logger = get_logger("ingest")


def approved_tables(event: Any) -> Tuple[str, ...]:
    """The tables whose mass deletion ``event`` approves (empty when none). Raises InvalidEventError for
    a value that is not a non-empty list, UnknownTableError for a name not in the allow-list."""
    if not isinstance(event, dict) or APPROVE_KEY not in event:
        return ()
    tables = event[APPROVE_KEY]
    if not isinstance(tables, list) or not tables:
        raise InvalidEventError("approve_deletes must be a non-empty list of source table names")
    for name in tables:
        check_source_table(name)
    return tuple(name for name in SOURCE_TABLES if name in tables)


def is_mass_delete(deleted: int, previous: int, max_fraction: float) -> bool:
    """True when deleting ``deleted`` ids of the ``previous`` key set needs approval: the table is emptied,
    or more than ``max_fraction`` of it goes."""
    if not deleted or not previous:
        return False
    return deleted == previous or deleted > max_fraction * previous


def hold(table: str, deleted: np.ndarray, previous: np.ndarray, current: np.ndarray, max_fraction: float,
         approved: Sequence[str]) -> Tuple[np.ndarray, np.ndarray, int]:
    """Decide one table's deletions: ``(recorded ids, key set to store, held count)``.

    ``deleted``, ``previous`` and ``current``: sorted int32 arrays (ids deleted, the previous key set,
    this run's keys). Held deletions are logged at ERROR and emitted as the ``DeletionsHeld`` metric."""
    if table in approved or not is_mass_delete(deleted.size, previous.size, max_fraction):
        if table in approved and deleted.size:
            logger.warning("mass deletion approved: recording it", table=table, rows=int(deleted.size))
        return deleted, current, 0
    _alert(table, int(deleted.size), int(previous.size), max_fraction)
    return np.empty(0, dtype=np.int32), np.union1d(current, deleted).astype(np.int32), int(deleted.size)


def still_held(held: Mapping[str, Mapping[str, int]], max_fraction: float) -> Dict[str, Dict[str, int]]:
    """The state pointer's ``held`` entries {table: {"rows", "table_rows"}} carried by a run that cannot
    decide them again (a bounded CDC batch), alerted again (the ERROR line and the metric per table).
    Returns a copy."""
    for table, entry in held.items():
        _alert(table, int(entry["rows"]), int(entry["table_rows"]), max_fraction)
    return {table: dict(entry) for table, entry in held.items()}


def _alert(table: str, rows: int, table_rows: int, max_fraction: float) -> None:
    """One held table: the ERROR line and the ``DeletionsHeld`` metric."""
    logger.error("deletions held: more than MAX_DELETE_FRACTION of the table would be deleted; nothing is "
                 "recorded until approved (totesys deletes --approve TABLE, or the execution input "
                 '{"approve_deletes": [TABLE]})', table=table, rows=rows,
                 table_rows=table_rows, max_delete_fraction=max_fraction)
    emit(deletions_held_metric(table, rows))


def deletions_held_metric(table: str, rows: int) -> Dict[str, Any]:
    """The EMF object of ``DeletionsHeld`` (dimensions service, table): verify.tf alarms on it."""
    return {"_aws": {"Timestamp": int(time.time() * 1000),
                     "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["service", "table"]],
                                            "Metrics": [{"Name": "DeletionsHeld", "Unit": "Count"}]}]},
            "service": SERVICE, "table": table, "DeletionsHeld": rows}
