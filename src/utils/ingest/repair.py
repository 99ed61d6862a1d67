"""What an ingest event asks beyond the incremental read: tables to re-sync (``utils.ingest.resync``) and
mass deletions approved (``utils.ingest.delete_guard``), with the guard's threshold from the settings."""
from dataclasses import dataclass
from typing import Any, Tuple

from utils.config import DEFAULT_MAX_DELETE_FRACTION
from utils.ingest.delete_guard import approved_tables
from utils.ingest.resync import resync_tables


@dataclass(frozen=True)
class RepairOptions:
    """``resync``: tables landed in full; ``approved``: tables whose held deletions this run records;
    ``max_delete_fraction``: the guard's threshold (MAX_DELETE_FRACTION)."""
    resync: Tuple[str, ...] = ()
    approved: Tuple[str, ...] = ()
    max_delete_fraction: float = DEFAULT_MAX_DELETE_FRACTION


def repair_options(event: Any, max_delete_fraction: float = DEFAULT_MAX_DELETE_FRACTION) -> RepairOptions:
    """The RepairOptions of ``event`` (raises what resync_tables and approved_tables raise)."""
    return RepairOptions(resync_tables(event), approved_tables(event), max_delete_fraction)
