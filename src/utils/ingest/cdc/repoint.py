"""A deliberate re-point (``repoint_source``) in CDC mode: the previous source's replication slot.

The state pointer records the source it was built with (``source``: database and server) and the slot its
CDC batches read (``cdc.slot``). A slot name is unique per server. When an operator re-points the pipeline
at another database:

- **on the same server**, the slot named CDC_SLOT_NAME is still the previous source's: the new database
  cannot create its own under that name, and the old one keeps retaining WAL. When the state records that
  very slot for that very database, it is this pipeline's own: ``release_previous_slot`` drops it (WARNING
  line; ``pg_drop_replication_slot`` drops a slot of any database of the server) and the run takes the new
  source's first snapshot as any first CDC run does. When it cannot (the slot is in use: something still
  reads it), the run stops with one line saying what to drop and where; nothing is landed.
- **on another server**, the previous slot is out of reach of this run's credentials: it is left, and a
  WARNING line names it and the command that drops it (``totesys cdc drop-slot``): it retains WAL on that
  server until then.

A slot in another database that the state does not record as its own is never dropped (``snapshot_reason``
refuses it: it may be another pipeline's).
"""
from typing import Any, Mapping, Optional

from utils.db.identity import describe_identity, same_database
from utils.errors import ConfigError
from utils.ingest.cdc.slot import SlotInfo, drop_slot
from utils.logger import get_logger

logger = get_logger("ingest")


def repoint_reason(previous: Mapping[str, Any], current: Mapping[str, Any]) -> Optional[str]:
    """Why a run re-pointed at another source database takes a full snapshot (None: the source is the one
    recorded, or none was): the previous slot's position and key sets belong to the previous source."""
    old_source, new_source = previous.get("source"), current.get("source")
    if not old_source or not new_source or same_database(old_source, new_source):
        return None
    return (f"re-pointed from {describe_identity(old_source)} to {describe_identity(new_source)}: the "
            "previous slot's changes are not this source's")


def release_previous_slot(conn: Any, previous: Mapping[str, Any], current: Mapping[str, Any],
                          slot: Optional[SlotInfo], name: str) -> Optional[SlotInfo]:
    """The slot this run goes on with after a re-point: ``slot`` unchanged unless it is the previous
    source's (``previous``: the state pointer before the re-point; ``current`` after it, whose ``source``
    is the database ``conn`` reaches) in another database of this server, which is dropped (None
    returned). Logs a WARNING for a previous slot on another server. Raises ConfigError (one line, what
    to drop where) when the previous slot cannot be dropped."""
    old_source = previous.get("source") or {}
    recorded_slot = (previous.get("cdc") or {}).get("slot")
    if not old_source or recorded_slot != name:
        return slot
    found = current.get("source") or {}
    database, system = found.get("database"), found.get("system_identifier")
    same_server = None in (old_source.get("system_identifier"), system) \
        or old_source.get("system_identifier") == system
    if not same_server:
        logger.warning("re-pointed at another server: the previous source's replication slot is left "
                       "there and retains WAL until dropped (totesys cdc drop-slot --source <its URL> "
                       f"--slot {name})", slot=name, previous=describe_identity(old_source))
        return slot
    if slot is None or slot.database is None or slot.database == database \
            or slot.database != old_source.get("database"):
        return slot
    try:
        dropped = drop_slot(conn, name)
    except Exception as err:
        raise ConfigError(
            f"re-pointed from database {slot.database} to {database}: the previous source's replication "
            f"slot {name} could not be dropped there ({type(err).__name__}: {err}); drop it (totesys cdc "
            f"drop-slot --source <URL of {slot.database}> --slot {name}) or set CDC_SLOT_NAME to another "
            "name, then run again") from None
    logger.warning("re-pointed: the previous source's replication slot dropped (it would have retained "
                   "WAL for nothing); the new source starts with a full snapshot", slot=name,
                   previous=describe_identity(old_source), dropped=dropped)
    return None
