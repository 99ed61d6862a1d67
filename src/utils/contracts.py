"""The contracts between the stages, as types every reader and writer shares.

Events and results are what the Lambda handlers take and return (Step Functions passes each stage's
result to the next as its event); manifests and state pointers are the JSON objects in the buckets
(docs/DESIGN.md, "S3 layout"). Times in them are text in ``utils.format_time`` form.
"""
from typing import Dict, List, NotRequired, Optional, TypedDict


class IngestEvent(TypedDict, total=False):
    """The ingest event; without ``tables_to_query`` every source table is read. ``resync``: tables landed
    in full (``utils.ingest.resync``); ``approve_deletes``: tables whose held mass deletion this run records
    (``utils.ingest.delete_guard``)."""
    tables_to_query: List[str]
    resync: List[str]
    approve_deletes: List[str]


# The ingest result, which is also the transform event: {source table: key of the file it landed}.
IngestResult = Dict[str, str]
TransformEvent = IngestResult


class StageResult(TypedDict):
    """The transform result (also the load event): the batches handled, oldest first, and the rows
    written per warehouse table; ``more_waiting`` (transform only, present only when true): the ingest cut
    its last batch at MAX_BATCH_ROWS, so the state machine runs another round."""
    batches: List[str]
    tables: Dict[str, int]
    more_waiting: NotRequired[bool]


TransformResult = StageResult
LoadEvent = StageResult


class LoadResult(StageResult):
    """The load result: rows newly quarantined in ``etl_rejected_rows`` (total and per source table);
    deletions newly recorded in ``etl_deleted_rows`` (only when there were any)."""
    rejected_rows: int
    rejected: Dict[str, int]
    deleted_rows: NotRequired[int]
    deleted: NotRequired[Dict[str, int]]


class IngestTableEntry(TypedDict):
    """One landed table of an ingest manifest; ``low`` is None on a table's first run."""
    key: str
    rows: int
    low: Optional[str]
    high: str
    snapshot: str


class IngestManifest(TypedDict):
    """``_batches/<batch time>.json`` in the ingest bucket (only the tables that landed a file)."""
    batch_id: str
    batch_time: str
    timezone: str
    ignored_columns: Dict[str, List[str]]
    prev_manifest_key: Optional[str]
    tables: Dict[str, IngestTableEntry]


class TableBounds(TypedDict):
    """One table's entry in the ingest state pointer: its upper bound and the snapshot it was read in;
    ``utc``: the snapshot's UTC time, ``offsets``: the UTC offsets (seconds) of the source clock in play
    then (``utils.ingest.zones``; absent in a state written before them). ``future_from`` and ``keys``:
    ``utils.ingest.backdated``, ``utils.ingest.deletes``."""
    high: str
    snapshot: str
    utc: NotRequired[str]
    offsets: NotRequired[List[int]]
    future_from: NotRequired[str]
    keys: NotRequired[str]


class SourceClock(TypedDict):
    """The source clock at a run's snapshot: ``now()`` in UTC and ``localtimestamp`` (its wall clock)."""
    utc: str
    wall: str


class IngestState(TypedDict, total=False):
    """``_state/ingest.json`` ({} before the first run). ``manifest_key``/``batch_id`` name the last
    batch with data; ``tables`` holds every table ever read, ``high`` a raw source stamp (an entry
    without ``utc``: in ``timezone``); ``clock``: the last run's readings."""
    manifest_key: Optional[str]
    batch_id: Optional[str]
    timezone: str
    clock: SourceClock
    ignored_columns: Dict[str, List[str]]
    tables: Dict[str, TableBounds]
    held_deletes: Dict[str, Dict[str, int]]
    source: Dict[str, Optional[str]]  # the source's identity (utils.db.identity), never a credential


class FileEntry(TypedDict):
    """A file of a processed batch and its row count."""
    key: str
    rows: int


class ProcessedManifest(TypedDict):
    """``_batches/<batch time>.json`` in the processed bucket."""
    batch_id: str
    batch_time: str
    ingest_manifest_key: str
    prev_manifest_key: Optional[str]
    tables: Dict[str, FileEntry]
    snapshots: Dict[str, str]
    rejected: NotRequired[FileEntry]
    # ids of the batch's rows of source tables without a warehouse table (utils.transform.deletes)
    source_ids: NotRequired[Dict[str, List[int]]]


class TransformState(TypedDict, total=False):
    """``_state/transform.json`` ({} before the first run): the last processed manifest written and
    the last ingest manifest transformed."""
    manifest_key: str
    ingest_manifest_key: str
