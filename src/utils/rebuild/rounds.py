"""A rebuild on AWS: the execution input ``{"rebuild": {}}`` re-derives the configured warehouse from the
landing zone in bounded rounds of the pipeline's state machine, like a backfill.

- ``StartRebuild`` (the load function, event ``{"start_rebuild": <request>}``): refuses a warehouse that
  holds loaded batches (RebuildError), names a new generation and records it in the processed bucket's
  ``_state/rebuild.json`` (``RebuildPointer``, written by the load only).
- From then on, while the pointer is not ``finished``, every execution's transform and load run rounds of
  the rebuild instead of their own work (the ingest runs as usual: what it lands is rebuilt too): the
  transform transforms the oldest pending ingest batches into the generation (``GenerationS3``), the load
  loads the oldest batches of the generation not in the ledger, each at most ``batches_per_invocation``
  batches and ``MAX_BATCH_ROWS`` rows of the order/payment tables (their facts, for the load), as one
  round of a backfill takes (always one batch at least), and says ``more_waiting`` when it left
  some, so the state machine runs another round (up to its 24 per execution; the next execution
  continues). The load whose event and own work leave nothing marks the pointer ``finished``.
- A failed invocation fails its execution (with the alert); the next execution continues where it stopped:
  the generation's transform state and the warehouse's ledger are the progress, exactly once per batch.
"""
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar

import boto3
from pg8000.native import Connection

from utils.aws.state import read_state, write_state
from utils.catalog.warehouse import FACTS
from utils.config import load_settings
from utils.contracts import RebuildPointer, RebuildRequest, RebuildRound, TransformResult
from utils.errors import InvalidEventError
from utils.format_time import format_time
from utils.ingest.bounded import BOUNDED_TABLES
from utils.load.run import load_pending, run_load, with_warehouse
from utils.logger import get_logger
from utils.rebuild.generation import GenerationS3, check_new, new_generation
from utils.rebuild.run import RebuildError, target_is_empty
from utils.transform.run import parse_event, run_transform, transform_pending

POINTER = "rebuild"  # _state/rebuild.json in the processed bucket
DEFAULT_BATCHES_PER_INVOCATION = 12
# A pending batch's manifest (ingest or processed), for ``bounded``.
M = TypeVar("M", bound=Mapping[str, Any])
MAX_BATCHES_PER_INVOCATION = 500
logger = get_logger("rebuild")


def parse_request(request: Any) -> RebuildRequest:
    """Check the execution input's ``rebuild``: an object with at most ``generation`` (text without '/')
    and ``batches_per_invocation`` (1 to MAX_BATCHES_PER_INVOCATION). Raises InvalidEventError."""
    if not isinstance(request, dict):
        raise InvalidEventError(f"rebuild input must be a JSON object, got {type(request).__name__}")
    unknown = sorted(set(request) - {"generation", "batches_per_invocation"})
    if unknown:
        raise InvalidEventError(f"rebuild input: unknown key(s) {unknown}; known: generation, "
                                "batches_per_invocation")
    generation = request.get("generation", "new")
    if not isinstance(generation, str) or not generation or "/" in generation:
        raise InvalidEventError(f"rebuild input: 'generation' must be \"new\" or a generation name, got "
                                f"{generation!r}")
    batches = request.get("batches_per_invocation", DEFAULT_BATCHES_PER_INVOCATION)
    if isinstance(batches, bool) or not isinstance(batches, int) \
            or not 1 <= batches <= MAX_BATCHES_PER_INVOCATION:
        raise InvalidEventError("rebuild input: 'batches_per_invocation' must be an integer from 1 to "
                                f"{MAX_BATCHES_PER_INVOCATION}, got {batches!r}")
    return {"generation": generation, "batches_per_invocation": batches}


def read_pointer(s3_client: Any, processed_bucket: str) -> Tuple[Dict[str, Any], Optional[str]]:
    """(the RebuildPointer or {}, its ETag)."""
    return read_state(s3_client, processed_bucket, POINTER)


def underway(pointer: Mapping[str, Any]) -> bool:
    """True when ``pointer`` names a rebuild not finished."""
    return bool(pointer.get("generation")) and not pointer.get("finished")


def start_rebuild(conn: Connection, s3_client: Any, processed_bucket: str, request: Any,
                  now: Optional[datetime] = None) -> Dict[str, Any]:
    """Start (or, given the name of the one underway, continue) a rebuild into the warehouse of ``conn``;
    return the round event ``{"rebuild": RebuildRound, "batches": [], "tables": {}}``.

    Raises InvalidEventError for a bad request, RebuildError when the warehouse already holds loaded
    batches, when another rebuild is underway, or when the named generation is not the one underway."""
    request = parse_request(request)
    now = now or datetime.now(timezone.utc)
    pointer, etag = read_pointer(s3_client, processed_bucket)
    if request["generation"] != "new":
        if pointer.get("generation") != request["generation"] or not underway(pointer):
            raise RebuildError(f"no rebuild of generation {request['generation']} is underway "
                               f"(latest: {pointer.get('generation') or 'none'}); start one with "
                               '{"rebuild": {}}')
        return _round_event(pointer)
    if underway(pointer):
        raise RebuildError(f"a rebuild of generation {pointer['generation']} is underway: every execution "
                           "continues it (start one with {})")
    if not target_is_empty(conn):
        raise RebuildError("the rebuild's target warehouse already holds loaded batches: a rebuild needs an "
                           "empty warehouse (point the warehouse secret at an empty or new database)")
    generation = new_generation(now)
    check_new(s3_client, processed_bucket, generation)
    started: RebuildPointer = {"generation": generation, "finished": False, "started": format_time(now),
                               "batches_per_invocation": request["batches_per_invocation"]}
    write_state(s3_client, processed_bucket, POINTER, started, etag)
    logger.info("rebuild started", generation=generation,
                batches_per_invocation=request["batches_per_invocation"])
    return _round_event(started)


def _round_event(pointer: Mapping[str, Any]) -> Dict[str, Any]:
    rebuild: RebuildRound = {"generation": pointer["generation"],
                             "batches_per_invocation": pointer["batches_per_invocation"]}
    return {"rebuild": rebuild, "batches": [], "tables": {}}


def bounded(batches_per_invocation: int, max_rows: int, rows_of: Callable[[Mapping[str, Any]], int]
            ) -> Callable[[List[Tuple[str, M]]], List[Tuple[str, M]]]:
    """``take`` for transform_pending/load_pending: the oldest batches up to ``batches_per_invocation``
    and ``max_rows`` rows (0: no row cap) by ``rows_of(manifest)``; always the first one."""
    def take(pending: List[Tuple[str, M]]) -> List[Tuple[str, M]]:
        taken: List[Tuple[str, M]] = []
        rows = 0
        for key, manifest in pending:
            more = rows_of(manifest)
            if taken and (len(taken) >= batches_per_invocation or (max_rows and rows + more > max_rows)):
                break
            taken.append((key, manifest))
            rows += more
        return taken
    return take


def _rows_of(tables: Iterable[str]) -> Callable[[Mapping[str, Any]], int]:
    """rows_of for ``bounded``: the rows of ``tables`` in a manifest (the tables MAX_BATCH_ROWS bounds in
    an ingest manifest, the facts built from them in a processed one)."""
    def rows_of(manifest: Mapping[str, Any]) -> int:
        entries = manifest.get("tables", {})
        return sum(entries[name]["rows"] for name in tables
                   if isinstance(entries.get(name), dict) and isinstance(entries[name].get("rows"), int))
    return rows_of


def transform_round(s3_client: Any, ingest_bucket: str, processed_bucket: str, pointer: Mapping[str, Any],
                    max_rows: int) -> TransformResult:
    """One bounded transform invocation of the rebuild ``pointer`` names; returns the TransformResult
    with ``rebuild``."""
    s3 = GenerationS3(s3_client, processed_bucket, pointer["generation"])
    take = bounded(pointer["batches_per_invocation"], max_rows, _rows_of(BOUNDED_TABLES))
    result = transform_pending(s3, ingest_bucket, processed_bucket, take=take)
    result["rebuild"] = _round_event(pointer)["rebuild"]
    logger.info("rebuild round transformed", generation=pointer["generation"], batches=len(result["batches"]),
                more_waiting=bool(result.get("more_waiting")))
    return result


def load_round(conn: Connection, s3_client: Any, processed_bucket: str, event: Mapping[str, Any],
               max_rows: int, connect: Optional[Callable[[], Connection]] = None) -> Dict[str, Any]:
    """One bounded load invocation of the rebuild ``event["rebuild"]`` names (the transform round's
    result); marks the pointer finished when neither the event nor this load leaves batches waiting.
    Returns ``{"rebuild", "batches", "tables", "rebuilt_rejected_rows", "more_waiting"?}`` (rows the
    rebuild quarantined again were alerted when first quarantined: not as ``rejected_rows``).
    Raises RebuildError when that rebuild is not the one underway."""
    rebuild = event.get("rebuild")
    if not isinstance(rebuild, dict) or not isinstance(rebuild.get("generation"), str):
        raise InvalidEventError("load event: 'rebuild' must be an object with a 'generation'")
    pointer, etag = read_pointer(s3_client, processed_bucket)
    if pointer.get("generation") != rebuild["generation"] or not underway(pointer):
        raise RebuildError(f"no rebuild of generation {rebuild['generation']} is underway (latest: "
                           f"{pointer.get('generation') or 'none'})")
    s3 = GenerationS3(s3_client, processed_bucket, pointer["generation"])
    take = bounded(pointer["batches_per_invocation"], max_rows, _rows_of(FACTS))
    waiting = bool(event.get("more_waiting"))
    loaded = load_pending(conn, s3, processed_bucket, connect=connect, more_waiting=waiting, take=take)
    result = {"rebuild": _round_event(pointer)["rebuild"], "batches": loaded["batches"],
              "tables": loaded["tables"], "rebuilt_rejected_rows": loaded["rejected_rows"]}
    if waiting or loaded.get("more_waiting"):
        result["more_waiting"] = True
    else:
        write_state(s3_client, processed_bucket, POINTER, {**pointer, "finished": True}, etag)
        logger.info("rebuild finished", generation=pointer["generation"])
    logger.info("rebuild round loaded", generation=pointer["generation"], batches=len(loaded["batches"]),
                more_waiting=bool(result.get("more_waiting")))
    return result


def transform_stage(event: Any, s3_client: Any = None) -> TransformResult:
    """The transform function's work: a rebuild round while a rebuild is underway, else ``run_transform``."""
    parse_event(event)
    settings = load_settings()
    s3_client = s3_client or boto3.client("s3")
    pointer, _ = read_pointer(s3_client, settings.processed_bucket)
    if underway(pointer):
        return transform_round(s3_client, settings.ingest_bucket, settings.processed_bucket, pointer,
                               settings.max_batch_rows)
    return run_transform(event, s3_client)


def load_stage(event: Any, s3_client: Any = None) -> Dict[str, Any]:
    """The load function's work: ``start_rebuild`` for ``{"start_rebuild": <request>}``, a rebuild round for
    an event with ``rebuild``, else ``run_load``."""
    if not isinstance(event, dict) or ("start_rebuild" not in event and "rebuild" not in event):
        return run_load(event, s3_client)
    settings = load_settings()
    s3_client = s3_client or boto3.client("s3")
    if "start_rebuild" in event:
        return with_warehouse(lambda conn, connect: start_rebuild(
            conn, s3_client, settings.processed_bucket, event["start_rebuild"]))
    return with_warehouse(lambda conn, connect: load_round(
        conn, s3_client, settings.processed_bucket, event, settings.max_batch_rows, connect=connect))
