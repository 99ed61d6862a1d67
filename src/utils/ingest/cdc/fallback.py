"""When CDC cannot continue from its slot, a consistent full snapshot: first run, slot lost, re-sync.

The snapshot creates the slot first and then reads every table in full in one REPEATABLE READ snapshot
(the cursor mode's ``ingest_tables`` reading every table as on its first run: ``IngestOptions.fresh``),
comparing each table's key set with the previous one (deletes in between are detected, and the mass-delete
guard applies, as in cursor mode). A snapshot larger than MAX_BATCH_ROWS is cut as the cursor cuts a first
load (``utils.ingest.bounded``): the state says ``more_waiting`` with the slot's pointer still marked
``scan_future`` (no slot batch read yet), and the following runs continue it as cursor batches
(``continue_snapshot``), whatever their event asks, until one is whole; only then does CDC read the slot,
from the consistent point recorded by the first of them. Every transaction
committing after the slot's consistent point is decoded by the following runs; every one committing
before it is visible to the snapshot, taken after the slot exists. Those in between are seen twice: a
row version landed twice is stored once (the load deduplicates on id, last_updated and values); a delete
seen by the snapshot's key diff and again by the slot is not landed again (CDC lands only deletes of keys in
the previous key set). See docs/DESIGN.md, "Change data capture".

A lost slot (dropped, invalidated by ``max_slot_wal_keep_size``, advanced past the state pointer by
someone else, or belonging to another database) is reported in one WARNING line before the snapshot:
never a silent full re-sync, never a silent gap.
"""
from dataclasses import replace
from typing import Any, Dict, Mapping, Optional, Sequence

from utils.catalog.source import SOURCE_TABLES
from utils.config import Settings
from utils.errors import ConfigError
from utils.ingest.cdc.slot import PLUGIN, SlotInfo, create_slot, drop_slot, lsn_int
from utils.ingest.repair import RepairOptions
from utils.ingest.run import IngestOptions, ingest_tables
from utils.logger import get_logger

logger = get_logger("ingest")


def snapshot_reason(conn: Any, state: Mapping[str, Any], slot: Optional[SlotInfo], slot_name: str,
                    repair: RepairOptions) -> Optional[str]:
    """Why this run must take a full snapshot instead of reading the slot or continuing a snapshot (None: it
    need not). A reason starting with "slot" is a lost slot. Raises ConfigError when slot ``slot_name``
    belongs to another database (it is not ours to drop). A re-sync asked while a snapshot is in progress
    does not start another: the snapshot reads every table afresh (the state machine repeats the event in
    every round of an execution). An approval of held deletions needs no snapshot: the next batch, slot or
    snapshot, decides them with the approval (``utils.ingest.cdc.run``)."""
    database = conn.run("SELECT current_database()::text")[0][0]
    if slot is not None and slot.database != database:
        raise ConfigError(f"replication slot {slot_name} belongs to database {slot.database}, not "
                          f"{database}, and this pipeline's state does not record it as its own: set "
                          "CDC_SLOT_NAME to another name (or, if it is an abandoned one, drop it: totesys "
                          f"cdc drop-slot --source <URL of {slot.database}> --slot {slot_name})")
    cdc = state.get("cdc")
    if repair.resync and not snapshot_in_progress(state):
        return "a re-sync was asked for"
    if not cdc or cdc.get("slot") != slot_name:
        return "first CDC run (no slot recorded in the state pointer)"
    if slot is None:
        return f"slot {slot_name} is missing (dropped)"
    if slot.lost:
        return f"slot {slot_name} was invalidated (its WAL was removed: max_slot_wal_keep_size)"
    if slot.plugin != PLUGIN:
        return f"slot {slot_name} uses plugin {slot.plugin}, not {PLUGIN}"
    if lsn_int(str(slot.confirmed_flush_lsn)) > lsn_int(cdc["lsn"]):
        return f"slot {slot_name} was advanced past the state pointer (changes were consumed elsewhere)"
    tables = state.get("tables") or {}
    incomplete = [table for table in SOURCE_TABLES
                  if not all((tables.get(table) or {}).get(bound) for bound in ("high", "snapshot", "keys"))]
    if incomplete:
        return f"the state pointer lacks the bounds or key set of {', '.join(incomplete)}"
    return None


def snapshot_in_progress(state: Mapping[str, Any]) -> bool:
    """The last batch was a snapshot's, cut at MAX_BATCH_ROWS: the next one continues it (a snapshot's
    pointer keeps ``scan_future`` until the first slot batch; a slot batch never writes it)."""
    return bool(state.get("more_waiting") and (state.get("cdc") or {}).get("scan_future"))


def take_snapshot(conn: Any, s3_client: Any, settings: Settings, repair: RepairOptions,
                  helpers: Sequence[Any], reason: str, repoint_source: bool = False) -> Dict[str, str]:
    """(Re)create the slot, then land every table in full from one snapshot, cut at MAX_BATCH_ROWS as a
    first load is; the new state pointer records the slot and its consistent point. Returns what
    ``ingest_tables`` returns."""
    name = settings.cdc_slot_name
    if reason.startswith("slot"):
        logger.warning("CDC slot lost: re-snapshotting every table and reconciling", slot=name,
                       reason=reason)
    else:
        logger.info("CDC snapshot: creating the slot and reading every table", slot=name, reason=reason)
    drop_slot(conn, name)
    lsn = create_slot(conn, name)
    logger.info("slot created", slot=name, lsn=lsn)
    options = IngestOptions(settings.ingest_overlap_seconds, settings.max_batch_rows,
                            replace(repair, resync=()), repoint_source=repoint_source,
                            future_tolerance_seconds=settings.ingest_future_tolerance_seconds, fresh=True)
    try:
        return ingest_tables(conn, s3_client, settings.ingest_bucket, list(SOURCE_TABLES), options, helpers,
                             cdc={"slot": name, "lsn": lsn, "scan_future": True})
    except BaseException:
        # A snapshot that failed (a database that is not totesys, a source error, a timeout) leaves no slot
        # behind: it would keep WAL, and tie the name to a database the state never recorded (the next
        # run against the right one would be refused). Whatever it landed is re-read by the next snapshot.
        try:  # the snapshot's own error is the one raised
            drop_slot(conn, name)
        except Exception:  # nosec B110
            pass
        raise


def continue_snapshot(conn: Any, s3_client: Any, settings: Settings, state: Mapping[str, Any],
                      repair: RepairOptions, helpers: Sequence[Any],
                      repoint_source: bool = False) -> Dict[str, str]:
    """The next batch of a snapshot cut at MAX_BATCH_ROWS: a cursor batch from the bounds the previous one
    recorded (re-syncs asked are served by the snapshot itself, approvals apply). Returns what
    ``ingest_tables`` returns."""
    cdc = dict(state["cdc"])
    logger.info("CDC snapshot continues: the previous batch was cut at MAX_BATCH_ROWS", slot=cdc["slot"])
    options = IngestOptions(settings.ingest_overlap_seconds, settings.max_batch_rows,
                            replace(repair, resync=()), repoint_source=repoint_source,
                            future_tolerance_seconds=settings.ingest_future_tolerance_seconds)
    return ingest_tables(conn, s3_client, settings.ingest_bucket, list(SOURCE_TABLES), options, helpers,
                         cdc=cdc)
