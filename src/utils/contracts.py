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
    written per warehouse table; ``more_waiting`` (present only when true; in the load's result only in
    a rebuild): the ingest cut its last batch at MAX_BATCH_ROWS, or a rebuild's bound left batches, so the
    state machine runs another round; ``rebuild``: the rebuild on AWS this round belongs to
    (``utils.rebuild.rounds``)."""
    batches: List[str]
    tables: Dict[str, int]
    more_waiting: NotRequired[bool]
    rebuild: NotRequired["RebuildRound"]


TransformResult = StageResult
LoadEvent = StageResult


class RebuildRound(TypedDict):
    """A rebuild on AWS (``utils.rebuild.rounds``): the generation being rebuilt and the most batches
    one invocation of the transform or the load takes."""
    generation: str
    batches_per_invocation: int


class RebuildRequest(TypedDict, total=False):
    """The execution input's ``rebuild``: ``generation`` "new" (the default) starts a rebuild, the name of
    the one underway continues it; ``batches_per_invocation`` bounds each invocation."""
    generation: str
    batches_per_invocation: int


class RebuildPointer(TypedDict):
    """``_state/rebuild.json`` in the processed bucket, written by the load: the latest rebuild on AWS;
    while ``finished`` is false every execution's transform and load continue it."""
    generation: str
    batches_per_invocation: int
    started: str
    finished: bool


class LoadResult(StageResult):
    """The load result: rows newly quarantined in ``etl_rejected_rows`` (total and per source table);
    deletions newly recorded in ``etl_deleted_rows`` (only when there were any)."""
    rejected_rows: int
    rejected: Dict[str, int]
    deleted_rows: NotRequired[int]
    deleted: NotRequired[Dict[str, int]]


class IngestTableEntry(TypedDict):
    """One landed table of an ingest manifest; ``low`` is None on a table's first run (or a re-sync);
    ``future_from`` only when the table had rows stamped ahead of the source clock
    (``utils.ingest.backdated``)."""
    key: str
    rows: int
    low: Optional[str]
    high: str
    snapshot: str
    future_from: NotRequired[str]


class DeletedEntry(TypedDict):
    """A manifest's ``deleted`` entry: the deleted-keys file (``utils.catalog.formats.DELETED_SCHEMA``),
    its row count and the rows per source table."""
    key: str
    rows: int
    tables: Dict[str, int]


class IngestManifest(TypedDict):
    """``_batches/<batch time>.json`` in the ingest bucket (only the tables that landed a file);
    ``deleted`` only when the batch detected hard deletes (``utils.ingest.deletes``)."""
    batch_id: str
    batch_time: str
    timezone: str
    ignored_columns: Dict[str, List[str]]
    prev_manifest_key: Optional[str]
    tables: Dict[str, IngestTableEntry]
    deleted: NotRequired[DeletedEntry]


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


class HeldDeletes(TypedDict):
    """Deletions of one table the mass-delete guard holds (``utils.ingest.delete_guard``)."""
    rows: int
    table_rows: int


class SourceClock(TypedDict):
    """The source clock at a run's snapshot: ``now()`` in UTC and ``localtimestamp`` (its wall clock)."""
    utc: str
    wall: str


class IngestState(TypedDict, total=False):
    """``_state/ingest.json``. Every run writes every key (``held_deletes`` once delete detection ran);
    the pointer is ``{}`` before the first run, so a reader can count on none (hence ``total=False``).
    ``manifest_key``/``batch_id`` name the last batch with data (None until one); ``tables`` holds every
    table ever read, ``high`` a raw source stamp (an entry without ``utc``: in ``timezone``); ``clock``:
    the last run's readings (``utils.ingest.zones``); ``more_waiting``: the last batch was cut at
    MAX_BATCH_ROWS (``utils.ingest.bounded``), ``planned_cuts`` (only then) the backfill's later cuts, raw
    source stamps in ``timezone``; ``source``: the source's identity (``utils.db.identity``),
    never a credential; ``cdc``: INGEST_MODE=cdc's slot pointer; ``keys_read``: the batch time (UTC) of the
    last run that read every table's key set (``utils.ingest.run.keys_read_after``; a backfill's
    intermediate rounds read none and add the ids they land to the sets they carry)."""
    manifest_key: Optional[str]
    batch_id: Optional[str]
    timezone: str
    clock: SourceClock
    ignored_columns: Dict[str, List[str]]
    tables: Dict[str, TableBounds]
    more_waiting: bool
    held_deletes: Dict[str, HeldDeletes]
    source: Optional[Dict[str, Optional[str]]]
    cdc: "CdcPointer"
    planned_cuts: List[str]
    keys_read: str


class CdcPointer(TypedDict):
    """``cdc`` in the ingest state (INGEST_MODE=cdc, ``utils.ingest.cdc``): the replication slot's name, the
    LSN up to which its changes are landed, and ``future``: {table: {key: last_updated}} of the rows landed
    as future rows, re-read once the bound passes them (docs/RELIABILITY.md, defect 7)."""
    slot: str
    lsn: str
    future: NotRequired[Dict[str, Dict[str, str]]]
    scan_future: NotRequired[bool]  # written by a snapshot: the next run finds the future rows it landed


class FileEntry(TypedDict):
    """A file of a processed batch and its row count."""
    key: str
    rows: int


class ProcessedManifest(TypedDict):
    """``_batches/<batch time>.json`` in the processed bucket; ``rejected``, ``deleted`` and
    ``source_ids`` only when the batch has any."""
    batch_id: str
    batch_time: str
    ingest_manifest_key: str
    prev_manifest_key: Optional[str]
    tables: Dict[str, FileEntry]
    snapshots: Dict[str, str]
    rejected: NotRequired[FileEntry]
    deleted: NotRequired[DeletedEntry]
    # ids of the batch's rows of source tables without a warehouse table (utils.transform.deletes)
    source_ids: NotRequired[Dict[str, List[int]]]


class TransformState(TypedDict, total=False):
    """``_state/transform.json``: the last processed manifest written and the last ingest manifest
    transformed. Every run writes both keys; the pointer is ``{}`` before the first run."""
    manifest_key: str
    ingest_manifest_key: str
