"""Settings from environment variables: the one place the pipeline reads them."""
import os
import re
from typing import Mapping, Optional, Tuple
from dataclasses import dataclass

from utils.errors import ConfigError

DEFAULT_TOTESYS_SECRET_ID = "totesys/db-credentials"  # nosec B105 - a name, not a secret
DEFAULT_WAREHOUSE_SECRET_ID = "totesys/warehouse-credentials"  # nosec B105 - a name
DEFAULT_INGEST_OVERLAP_SECONDS = 3600
DEFAULT_INGEST_PARALLEL_CONNECTIONS = 2
MAX_INGEST_PARALLEL_CONNECTIONS = 8
# Source rows of the order/payment tables one batch takes at most (utils/ingest/bounded.py); 0 = no cap.
DEFAULT_MAX_BATCH_ROWS = 2_000_000
# Share of a table one run may record as deleted before its deletions are held (utils/ingest/delete_guard.py).
DEFAULT_MAX_DELETE_FRACTION = 0.25
# How far ahead of the source clock a row's last_updated may be before it is a "future row", landed and
# quarantined instead of waiting for the clock (utils/ingest/backdated.py). The source's own clock stamps
# the rows, so a legitimate row is never ahead of it; 5 minutes is far beyond any NTP-synced writer's skew
# and well inside the 30-minute freshness target, so a row within it just waits a few minutes.
DEFAULT_INGEST_FUTURE_TOLERANCE_SECONDS = 300
# How ingest finds changes: "cursor" (a last_updated window and key-set diffs) or "cdc" (a logical
# replication slot: utils/ingest/cdc). CDC_SLOT_NAME names the slot (a replication slot name: lower-case
# letters, digits and underscores, at most 63).
INGEST_MODES = ("cursor", "cdc")
DEFAULT_INGEST_MODE = "cursor"
DEFAULT_CDC_SLOT_NAME = "totesys_cdc"
# How long the load may keep its warehouse connection for the next invocation in the same process (a warm
# Lambda container, the local emulator), in seconds from when it was opened; 0: a new connection for every
# invocation (utils/db/kept.py).
DEFAULT_WAREHOUSE_KEEP_CONNECTION_SECONDS = 3600
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")


@dataclass(frozen=True)
class Settings:
    ingest_bucket: str
    processed_bucket: str
    totesys_secret_id: str
    warehouse_secret_id: str
    ingest_overlap_seconds: int
    ingest_parallel_connections: int = DEFAULT_INGEST_PARALLEL_CONNECTIONS
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    max_delete_fraction: float = DEFAULT_MAX_DELETE_FRACTION
    ingest_future_tolerance_seconds: int = DEFAULT_INGEST_FUTURE_TOLERANCE_SECONDS
    ingest_mode: str = DEFAULT_INGEST_MODE
    cdc_slot_name: str = DEFAULT_CDC_SLOT_NAME
    warehouse_keep_connection_seconds: int = DEFAULT_WAREHOUSE_KEEP_CONNECTION_SECONDS


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is not set")
    return value


def _env_int(name: str, default: int, rule: str, low: int = 0, high: Optional[int] = None) -> int:
    """The integer in environment variable ``name`` (``default`` when unset), from ``low`` to ``high``
    (None: no upper bound); raise ConfigError saying it ``must be {rule}`` otherwise."""
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        raise ConfigError(f"environment variable {name} must be {rule}, got {text!r}")
    return value


def load_settings() -> Settings:
    """Return the Settings; raise ConfigError naming the first bad variable."""
    overlap = _env_int("INGEST_OVERLAP_SECONDS", DEFAULT_INGEST_OVERLAP_SECONDS, "a non-negative integer")
    parallel = _env_int("INGEST_PARALLEL_CONNECTIONS", DEFAULT_INGEST_PARALLEL_CONNECTIONS,
                        f"an integer from 1 to {MAX_INGEST_PARALLEL_CONNECTIONS}", low=1,
                        high=MAX_INGEST_PARALLEL_CONNECTIONS)
    max_rows = _env_int("MAX_BATCH_ROWS", DEFAULT_MAX_BATCH_ROWS, "a non-negative integer (0: no cap)")
    fraction_text = os.environ.get("MAX_DELETE_FRACTION", str(DEFAULT_MAX_DELETE_FRACTION))
    try:
        fraction = float(fraction_text)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction <= 1:
        raise ConfigError("environment variable MAX_DELETE_FRACTION must be a number above 0 and at most 1 "
                          f"(1: hold only a table emptied), got {fraction_text!r}")
    tolerance = _env_int("INGEST_FUTURE_TOLERANCE_SECONDS", DEFAULT_INGEST_FUTURE_TOLERANCE_SECONDS,
                         "a non-negative integer")
    mode = os.environ.get("INGEST_MODE", DEFAULT_INGEST_MODE).strip().lower() or DEFAULT_INGEST_MODE
    if mode not in INGEST_MODES:
        raise ConfigError(f"environment variable INGEST_MODE must be one of {', '.join(INGEST_MODES)}, "
                          f"got {mode!r}")
    slot = os.environ.get("CDC_SLOT_NAME", DEFAULT_CDC_SLOT_NAME).strip() or DEFAULT_CDC_SLOT_NAME
    if not _SLOT_NAME.fullmatch(slot):
        raise ConfigError("environment variable CDC_SLOT_NAME must be 1 to 63 lower-case letters, digits "
                          f"or underscores, got {slot!r}")
    keep = _env_int("WAREHOUSE_KEEP_CONNECTION_SECONDS", DEFAULT_WAREHOUSE_KEEP_CONNECTION_SECONDS,
                    "a non-negative integer (0: a new connection for every invocation)")
    return Settings(
        ingest_bucket=_required("INGEST_BUCKET"),
        processed_bucket=_required("PROCESSED_BUCKET"),
        totesys_secret_id=os.environ.get(
            "TOTESYS_SECRET_ID", DEFAULT_TOTESYS_SECRET_ID),
        warehouse_secret_id=os.environ.get(
            "WAREHOUSE_SECRET_ID", DEFAULT_WAREHOUSE_SECRET_ID),
        ingest_overlap_seconds=overlap,
        ingest_parallel_connections=parallel,
        max_batch_rows=max_rows,
        max_delete_fraction=fraction,
        ingest_future_tolerance_seconds=tolerance,
        ingest_mode=mode,
        cdc_slot_name=slot,
        warehouse_keep_connection_seconds=keep,
    )


def tls_variables(role: str, environ: Optional[Mapping[str, str]] = None) -> Tuple[str, Optional[str]]:
    """The raw TLS settings of database ``role`` (``"totesys"`` or ``"warehouse"``): ``(mode, root_cert)``
    from ``<ROLE>_SSLMODE`` (stripped, lower-cased; "" when unset) and ``<ROLE>_SSLROOTCERT`` (None when
    unset). ``utils.db.tls.tls_settings`` checks them and applies the defaults."""
    environ = os.environ if environ is None else environ
    prefix = role.upper()
    mode = environ.get(f"{prefix}_SSLMODE", "").strip().lower()
    return mode, environ.get(f"{prefix}_SSLROOTCERT", "").strip() or None
