"""The one line on the CDC replication slot that ``totesys cdc status`` and ``totesys pending`` show.

Below both commands (``cdc_cli``, ``pending``), so that neither imports the other.
"""
from typing import Any

from utils.ingest.cdc.slot import slot_info


def slot_line(conn: Any, name: str) -> str:
    """One line on slot ``name``: the WAL it keeps on the source and its state, or that there is none."""
    info = slot_info(conn, name)
    if info is None:
        return f"CDC slot {name}: none on this database (the next CDC run creates it with a full snapshot)"
    cap = conn.run("SELECT current_setting('max_slot_wal_keep_size')")[0][0]
    retained = "unknown" if info.retained_bytes is None else f"{info.retained_bytes / 2 ** 20:,.1f} MiB"
    capped = "no cap: set max_slot_wal_keep_size" if cap == "-1" else f"max_slot_wal_keep_size {cap}"
    return (f"CDC slot {name}: retains {retained} of WAL on totesys ({capped}); wal_status "
            f"{info.wal_status or 'lost'}, confirmed up to {info.confirmed_flush_lsn}")
