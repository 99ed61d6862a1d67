"""When CDC cannot continue from its slot, a consistent full snapshot: first run, slot lost, re-sync.

The snapshot creates the slot first and then reads every table in full in one REPEATABLE READ snapshot
(the cursor mode's ``ingest_tables`` with every table re-synced, no batch cap), comparing each table's
key set with the previous one (deletes in between are detected, as in cursor mode). Every transaction
committing after the slot's consistent point is decoded by the following runs; every one committing
before it is visible to the snapshot, taken after the slot exists. Those in between are seen twice: a
row version landed twice is stored once (the load deduplicates on (id, last_updated)); a delete seen by
the snapshot's key diff and again by the slot is not landed again (CDC lands only deletes of keys in the
previous key set). See docs/DESIGN.md, "Change data capture".

A lost slot (dropped, invalidated by ``max_slot_wal_keep_size``, advanced past the state pointer by
someone else, or belonging to another database) is reported in one WARNING line before the snapshot:
never a silent full re-sync, never a silent gap.
"""
from dataclasses import replace
from typing import Optional

from utils.catalog.source import SOURCE_TABLES
from utils.errors import ConfigError
from utils.ingest.cdc.slot import PLUGIN, create_slot, drop_slot, lsn_int
from utils.ingest.run import IngestOptions, ingest_tables
from utils.logger import get_logger

logger = get_logger("ingest")


def snapshot_reason(conn, state, slot, slot_name, repair) -> Optional[str]:
    """Why this run must take a full snapshot instead of reading the slot (None: it can read the slot).
    A reason starting with "slot" is a lost slot. Raises ConfigError when slot ``slot_name`` belongs to
    another database (it is not ours to drop)."""
    database = conn.run("SELECT current_database()::text")[0][0]
    if slot is not None and slot.database != database:
        raise ConfigError(f"replication slot {slot_name} belongs to database {slot.database}, not "
                          f"{database}: set CDC_SLOT_NAME to another name")
    cdc = state.get("cdc")
    if repair.resync or repair.approved:
        return "a re-sync was asked for"
    if not cdc or cdc.get("slot") != slot_name:
        return "first CDC run (no slot recorded in the state pointer)"
    if slot is None:
        return f"slot {slot_name} is missing (dropped)"
    if slot.lost:
        return f"slot {slot_name} was invalidated (its WAL was removed: max_slot_wal_keep_size)"
    if slot.plugin != PLUGIN:
        return f"slot {slot_name} uses plugin {slot.plugin}, not {PLUGIN}"
    if lsn_int(slot.confirmed_flush_lsn) > lsn_int(cdc["lsn"]):
        return f"slot {slot_name} was advanced past the state pointer (changes were consumed elsewhere)"
    tables = state.get("tables") or {}
    incomplete = [table for table in SOURCE_TABLES
                  if not all((tables.get(table) or {}).get(bound) for bound in ("high", "snapshot", "keys"))]
    if incomplete:
        return f"the state pointer lacks the bounds or key set of {', '.join(incomplete)}"
    return None


def take_snapshot(conn, s3_client, settings, repair, helpers, reason, repoint_source=False):
    """(Re)create the slot, then land every table in full from one snapshot; the new state pointer records
    the slot and its consistent point. Returns what ``ingest_tables`` returns."""
    name = settings.cdc_slot_name
    if reason.startswith("slot"):
        logger.warning("CDC slot lost: re-snapshotting every table and reconciling", slot=name, reason=reason)
    else:
        logger.info("CDC snapshot: creating the slot and reading every table", slot=name, reason=reason)
    drop_slot(conn, name)
    lsn = create_slot(conn, name)
    logger.info("slot created", slot=name, lsn=lsn)
    options = IngestOptions(settings.ingest_overlap_seconds, 0, replace(repair, resync=tuple(SOURCE_TABLES)),
                            repoint_source=repoint_source,
                            future_tolerance_seconds=settings.ingest_future_tolerance_seconds)
    return ingest_tables(conn, s3_client, settings.ingest_bucket, list(SOURCE_TABLES), options, helpers,
                         cdc={"slot": name, "lsn": lsn, "scan_future": True})
