"""Rows the ``last_updated`` cursor cannot see, found another way: backdated new keys and future rows.

**Backdated new keys.** A row inserted with an old ``last_updated`` (a restore from backup, a back-dated
correction, an id re-inserted after a delete) lies below the window and no cursor ever reaches it. The
key-set diff (``utils.ingest.deletes``) sees it: its key is in this run's key set and not in the previous
one. Every such key's row below ``high`` lands in the batch whatever its ``last_updated`` (``copy_sql``
with ``backdated``), so the warehouse gets it and the load closes an open deletion of that id. Rows at or
above ``high`` are left to the window, which reaches them as usual (taking them here would land them
twice). The keys reach the COPY as runs of consecutive values (``key_runs``) in two ``totesys.*``
settings; the COPY expands them once into a hashed sub-plan.

**Future rows.** A row whose ``last_updated`` is at or after ``future_from = max(localtimestamp,
prev.high) + the zone's daylight-saving shift + INGEST_FUTURE_TOLERANCE_SECONDS`` cannot be a row the
source's clock stamped (the shift covers the wall clock going back at a fall-back): it is landed at
once, in the same file, and the transform quarantines it (``utils.transform.quarantine
.split_future_rows``) instead of it waiting silently for the clock. A future row already landed by the
previous run is not landed again: the previous run took every visible row at or after its own
``future_from``, so rows there written by a transaction that had certainly finished before its snapshot
(xid below its xmin, the window's own test) are excluded. See docs/DESIGN.md, "Rows the cursor cannot see".
"""
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from utils.logger import get_logger

logger = get_logger("ingest")


def new_keys(previous: Optional[np.ndarray], current: np.ndarray) -> np.ndarray:
    """The keys of ``current`` (sorted int32) not in ``previous`` (sorted int32, or None on a table's
    first run: nothing is new then, every row is read anyway)."""
    if previous is None:
        return np.empty(0, dtype=np.int32)
    return np.setdiff1d(current, previous, assume_unique=True)


def key_runs(keys: Union[np.ndarray, Sequence[int]]) -> Tuple[List[int], List[int]]:
    """(first values, last values) of the runs of consecutive values of sorted ``keys``, as lists."""
    keys = np.asarray(keys, dtype=np.int64)
    if not keys.size:
        return [], []
    breaks = np.flatnonzero(np.diff(keys) != 1)
    firsts = np.concatenate(([keys[0]], keys[breaks + 1]))
    lasts = np.concatenate((keys[breaks], [keys[-1]]))
    return firsts.tolist(), lasts.tolist()


def array_text(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers, for a ``totesys.*`` setting (``{1,5,9}``)."""
    return "{" + ",".join(str(int(value)) for value in values) + "}"


def backdated_settings(keys: Union[np.ndarray, Sequence[int]]) -> Dict[str, str]:
    """The ``totesys.new_first``/``totesys.new_last`` settings of a table's new keys."""
    firsts, lasts = key_runs(keys)
    return {"new_first": array_text(firsts), "new_last": array_text(lasts)}


def log_new_keys(table: str, keys: np.ndarray) -> None:
    """One INFO line when a table has new keys (the rows below the window among them land too)."""
    if len(keys):
        logger.info("new keys: their rows land whatever their last_updated", table=table,
                    keys=int(len(keys)), first_keys=[int(key) for key in keys[:10]])
