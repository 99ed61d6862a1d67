"""``totesys cdc status|drop-slot``: the CDC replication slot on totesys (utils/ingest/cdc), and the one line
``totesys pending`` shows for it.

    totesys cdc status [--source URL] [--slot NAME] [--state-dir DIR]
    totesys cdc drop-slot [--source URL] [--slot NAME] [--state-dir DIR]

The slot defaults to CDC_SLOT_NAME (else totesys_cdc). ``drop-slot`` is the teardown step for a pipeline
that stops using CDC (or is removed): a slot nobody reads keeps WAL on the source until
``max_slot_wal_keep_size`` invalidates it. The next CDC run after a drop says so and re-snapshots.
"""
import os

from utils.config import DEFAULT_CDC_SLOT_NAME
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.ingest.cdc.slot import drop_slot, slot_info


def slot_name(args=None):
    """The slot the command is about: ``--slot``, else CDC_SLOT_NAME, else the default."""
    return getattr(args, "slot", None) or os.environ.get("CDC_SLOT_NAME") or DEFAULT_CDC_SLOT_NAME


def slot_line(conn, name):
    """One line on slot ``name``: the WAL it keeps on the source and its state, or that there is none."""
    info = slot_info(conn, name)
    if info is None:
        return f"CDC slot {name}: none on this database (the next CDC run creates it with a full snapshot)"
    cap = conn.run("SELECT current_setting('max_slot_wal_keep_size')")[0][0]
    retained = "unknown" if info.retained_bytes is None else f"{info.retained_bytes / 2 ** 20:,.1f} MiB"
    capped = "no cap: set max_slot_wal_keep_size" if cap == "-1" else f"max_slot_wal_keep_size {cap}"
    return (f"CDC slot {name}: retains {retained} of WAL on totesys ({capped}); wal_status "
            f"{info.wal_status or 'lost'}, confirmed up to {info.confirmed_flush_lsn}")


def command_cdc(args, out=print):
    """``status`` prints slot_line; ``drop-slot`` drops the slot. Exit status 0 (1 on errors, by the CLI)."""
    from totesys_local.trust import database_urls
    args.warehouse = getattr(args, "warehouse", None)
    source_url = args.source or os.environ.get("TOTESYS_SOURCE_URL") or database_urls(args)[0]
    conn = connect_to_db(credentials=credentials_from_url(source_url), timezone=None, role="totesys")
    try:
        name = slot_name(args)
        if args.action == "status":
            out(slot_line(conn, name))
        elif drop_slot(conn, name):
            out(f"dropped CDC slot {name}: the next INGEST_MODE=cdc run re-snapshots every table")
        else:
            out(f"no CDC slot {name} on this database: nothing to drop")
        return 0
    finally:
        close_db_connection(conn)
