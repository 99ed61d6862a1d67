"""What waits downstream in a local state folder: ``totesys pending`` (and the first half of retry).

Reads the buckets as the runner saved them under ``<state-dir>/s3`` (no emulated AWS needed) and the
warehouse's ledger table:
- ingest batches not yet transformed: the ingest manifests from the one ``_state/ingest.json`` names,
  back along ``prev_manifest_key``, to the one ``_state/transform.json`` names as transformed;
- processed batches not yet loaded: the processed manifests from the one ``_state/transform.json``
  names, back to the newest one in ``etl_load_ledger`` (the load stage loads oldest first, one
  transaction per batch, so the loaded ones are the oldest);
- the last failed run, from ``<state-dir>/last_error.json``.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

from totesys_local.local_state import BUCKETS, LAST_ERROR_FILE
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url, describe_url
from utils.aws.manifests import walk_manifests
from utils.errors import CorruptFileError, TotesysError

SHOWN = 20  # batches listed per kind; older ones are counted


class PendingError(TotesysError):
    """The local state cannot be read: a state pointer or manifest is missing or corrupt."""


@dataclass(frozen=True)
class Batch:
    batch_id: str
    batch_time: str
    manifest_key: str


@dataclass
class Pending:
    """Batches waiting downstream, oldest first. ``ledger_error`` says why the processed batches
    could not be checked against the warehouse (then every processed batch is listed)."""
    ingest: list = field(default_factory=list)
    processed: list = field(default_factory=list)
    warehouse: str = None
    ledger_error: str = None
    last_error: dict = None

    def is_empty(self):
        return not self.ingest and not self.processed and self.ledger_error is None


def _read(path):
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise PendingError(f"{path} is not valid JSON") from None
    if not isinstance(value, dict):
        raise PendingError(f"{path} is not a JSON object")
    return value


def _chain(root, head_key, stop):
    """Batches of the manifests from ``head_key`` back along prev_manifest_key while
    ``stop(key, manifest)`` is false; oldest first (``utils.aws.manifests.walk_manifests``)."""
    def read(key):
        manifest = _read(root / key)
        if manifest is None:
            raise PendingError(f"manifest {root / key} is missing: the local state is incomplete")
        return manifest

    try:
        chain, _ = walk_manifests(read, head_key, stop=stop)
    except CorruptFileError as err:
        raise PendingError(f"{root}: {err}") from None
    return [Batch(str(manifest.get("batch_id")), str(manifest.get("batch_time")), key)
            for key, manifest in chain]


def loaded_batch_ids(warehouse_url):
    """The batch ids in the warehouse's ``etl_load_ledger`` (empty when the table does not exist)."""
    conn = connect_to_db(credentials=credentials_from_url(warehouse_url))
    try:
        if conn.run("SELECT to_regclass('public.etl_load_ledger') IS NULL")[0][0]:
            return set()
        return {row[0] for row in conn.run("SELECT batch_id FROM etl_load_ledger")}
    finally:
        close_db_connection(conn)


def find_pending(state_dir, warehouse_url=None):
    """Return the Pending of ``state_dir``. Without ``warehouse_url``, or when the warehouse cannot
    be read, ``ledger_error`` says so and every processed batch is listed as not known to be loaded.
    Raises PendingError when the saved state is incomplete or corrupt."""
    state_dir = Path(state_dir)
    ingest_root = state_dir / "s3" / BUCKETS["INGEST_BUCKET"]
    processed_root = state_dir / "s3" / BUCKETS["PROCESSED_BUCKET"]
    ingest_state = _read(ingest_root / "_state" / "ingest.json") or {}
    transform_state = _read(processed_root / "_state" / "transform.json") or {}
    found = Pending(last_error=_read(state_dir / LAST_ERROR_FILE))
    transformed_up_to = transform_state.get("ingest_manifest_key")
    found.ingest = _chain(ingest_root, ingest_state.get("manifest_key"),
                          lambda key, _: key == transformed_up_to)
    loaded = set()
    if warehouse_url is None:
        found.ledger_error = "no warehouse given (--warehouse or TOTESYS_WAREHOUSE_URL)"
    else:
        found.warehouse = describe_url(warehouse_url)
        try:
            loaded = loaded_batch_ids(warehouse_url)
        except TotesysError as err:
            found.ledger_error = f"cannot read etl_load_ledger in {found.warehouse}: {err}"
    found.processed = _chain(processed_root, transform_state.get("manifest_key"),
                             lambda _, manifest: manifest.get("batch_id") in loaded)
    return found


def print_pending(found, out=print, indent=""):
    """Print a Pending for an operator: each waiting batch (id and batch time), and the last error."""
    def listing(title, batches):
        out(f"{indent}{title}: {len(batches)}")
        hidden = len(batches) - SHOWN
        if hidden > 0:
            out(f"{indent}  ... {hidden} older")
        for batch in batches[-SHOWN:]:
            out(f"{indent}  {batch.batch_id}  (batch time {batch.batch_time} UTC)")

    listing("ingest batches not yet transformed", found.ingest)
    if found.ledger_error:
        out(f"{indent}warehouse ledger not checked: {found.ledger_error}")
        listing("processed batches not known to be loaded", found.processed)
    else:
        listing(f"processed batches not yet loaded into {found.warehouse}", found.processed)
    error = found.last_error
    if error:
        out(f"{indent}last failed run: {error.get('time', '?')}, stage {error.get('stage') or '?'}: "
            f"{error.get('error_type', '?')}: {error.get('message', '')}")
        if error.get("log"):
            out(f"{indent}  logs: {error['log']}")
    elif found.is_empty():
        out(f"{indent}nothing pending: every batch is loaded")
