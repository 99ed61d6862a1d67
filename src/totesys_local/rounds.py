"""The rounds of one local execution: what each round did, and its state saved as soon as it is loaded.

With bounded batches (MAX_BATCH_ROWS) one execution runs up to 24 rounds of ingest -> transform -> load.
The state machine's output keeps only the last round's results, so the runner records every round
itself: the load handler the local account invokes is wrapped (``after_each_load``) so that, while
``recording`` is active, each successful load (a) records that round (the ingest batch it carried, the
transform's and the load's results) and (b) saves the buckets to the state folder before the state
machine moves on to the next round. A kill between rounds then leaves the folder at the last round
loaded, and the next run continues from there instead of from round 1 (``local_state.save_buckets`` is
safe while the execution keeps writing: the state pointers are read first and written last).
"""
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import boto3

from totesys_local.errors import LocalError
from totesys_local.local_state import BUCKETS, REGION, save_buckets

_lock = threading.Lock()
_current: Optional["Rounds"] = None
# A Lambda handler: (event, context) -> result.
Handler = Callable[[Any, Any], Any]


class RoundSaveError(LocalError):
    """A round loaded but its state could not be saved to the state folder (the execution fails; the
    runner re-raises the original error, ``Rounds.failure``, in its own thread)."""


@dataclass
class Round:
    """One round: ``manifest`` the ingest manifest it landed (None: nothing new), ``manifest_key``, the
    transform's batches and the load's result."""
    manifest: Optional[Mapping[str, Any]]
    manifest_key: Optional[str]
    transformed: List[str]
    load: Dict[str, Any]

    @property
    def ingested(self) -> Dict[str, int]:
        """{source table: rows landed} of this round's ingest batch."""
        tables = (self.manifest or {}).get("tables") or {}
        return {table: entry["rows"] for table, entry in tables.items()}


@dataclass
class Rounds:
    """The rounds of the execution in progress, in order; ``saved`` new files per save."""
    s3_dir: Path
    last_manifest_key: Optional[str]
    rounds: List[Round] = field(default_factory=list)
    transformed: List[str] = field(default_factory=list)
    saved: int = 0
    failure: Optional[BaseException] = None

    def transform_done(self, result: Optional[Mapping[str, Any]]) -> None:
        self.transformed = list((result or {}).get("batches") or [])

    def load_done(self, result: Optional[Mapping[str, Any]]) -> None:
        """Record the round the load just finished, then save the buckets: the local run's own
        bookkeeping, so as the account's operator, not under the load function's role."""
        from totesys_local.aws_emulation import operator
        with operator():
            self._record(result)

    def _record(self, result: Optional[Mapping[str, Any]]) -> None:
        from utils.aws.state import read_ingest_state
        s3 = boto3.client("s3", region_name=REGION)
        state, _ = read_ingest_state(s3, BUCKETS["INGEST_BUCKET"])
        key = state.get("manifest_key")
        manifest = None
        if key and key != self.last_manifest_key:
            from utils.aws.manifests import read_ingest_manifest
            manifest = read_ingest_manifest(s3, BUCKETS["INGEST_BUCKET"], key)
            self.last_manifest_key = key
        self.rounds.append(Round(manifest, key if manifest else None, self.transformed, dict(result or {})))
        self.saved += save_buckets(self.s3_dir)


@contextmanager
def recording(s3_dir: Path, last_manifest_key: Optional[str]) -> Iterator[Rounds]:
    """Record the rounds of the execution run inside this context (one at a time); yields Rounds.
    ``last_manifest_key``: the ingest manifest the state pointer named before the execution."""
    global _current
    with _lock:
        _current = Rounds(s3_dir, last_manifest_key)
        recorded = _current
    try:
        yield recorded
    finally:
        with _lock:
            _current = None


def after_each_load(transform_handler: Handler, load_handler: Handler) -> Tuple[Handler, Handler]:
    """(transform, load) handlers that report to the Rounds being recorded, if any; the load's save
    happens before it returns, so before the state machine starts the next round."""
    def transform(event: Any, context: Any) -> Any:
        result = transform_handler(event, context)
        if _current is not None:
            _current.transform_done(result)
        return result

    def load(event: Any, context: Any) -> Any:
        result = load_handler(event, context)
        recorded = _current
        if recorded is not None:
            try:
                recorded.load_done(result)
            except BaseException as err:  # noqa: BLE001 - the execution thread: the runner re-raises it
                recorded.failure = err
                raise RoundSaveError(f"the batch loaded, but the state folder could not be saved after it: "
                                     f"{type(err).__name__}: {err}") from None
        return result

    return transform, load


def totals(rounds: Iterable[Round]) -> Tuple[Dict[str, int], Dict[str, int], List[str], List[str],
                                             Dict[str, int], Dict[str, int]]:
    """(ingested {source table: rows}, loaded {warehouse table: rows}, batches loaded, batches transformed,
    rejected {source table: rows}, deleted {source table: rows}) summed over ``rounds``."""
    ingested: Dict[str, int] = {}
    loaded: Dict[str, int] = {}
    rejected: Dict[str, int] = {}
    deleted: Dict[str, int] = {}
    batches: List[str] = []
    transformed: List[str] = []
    for one in rounds:
        _add(ingested, one.ingested)
        _add(loaded, one.load.get("tables") or {})
        _add(rejected, one.load.get("rejected") or {})
        _add(deleted, one.load.get("deleted") or {})
        batches += one.load.get("batches") or []
        transformed += one.transformed
    return ingested, loaded, batches, transformed, rejected, deleted


def _add(into: Dict[str, int], counts: Mapping[str, int]) -> None:
    for name, rows in counts.items():
        into[name] = into.get(name, 0) + rows
