"""``totesys cdc status|drop-slot``: the CDC replication slot on totesys (utils/ingest/cdc), and the one line
``totesys pending`` shows for it (``cdc_slot``).

    totesys cdc status [--source URL] [--slot NAME] [--state-dir DIR]
    totesys cdc drop-slot [--source URL] [--slot NAME] [--state-dir DIR]

The slot defaults to CDC_SLOT_NAME (else totesys_cdc). ``drop-slot`` is the teardown step for a pipeline
that stops using CDC (or is removed): a slot nobody reads keeps WAL on the source until
``max_slot_wal_keep_size`` invalidates it. The next CDC run after a drop says so and re-snapshots.
"""
import os
from argparse import Namespace
from typing import Callable, Optional

from totesys_local.cdc_slot import slot_line
from totesys_local.trust import database_urls
from utils.config import DEFAULT_CDC_SLOT_NAME
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.ingest.cdc.slot import drop_slot


def slot_name(args: Optional[Namespace] = None) -> str:
    """The slot the command is about: ``--slot``, else CDC_SLOT_NAME, else the default."""
    return getattr(args, "slot", None) or os.environ.get("CDC_SLOT_NAME") or DEFAULT_CDC_SLOT_NAME


def command_cdc(args: Namespace, out: Callable[[str], None] = print) -> int:
    """``status`` prints slot_line; ``drop-slot`` drops the slot. Exit status 0 (1 on errors, by the CLI)."""
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
