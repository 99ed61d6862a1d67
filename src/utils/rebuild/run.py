"""One rebuild: every ingest batch transformed again into a new generation of the processed bucket, then
loaded, oldest first, into an empty warehouse. totesys is never read.

The transform and the load are the pipeline's own (``transform_pending``, ``load_pending``), run on a
``GenerationS3`` client: the result is what the incremental runs would have built had they run with
today's code, batch by batch in the same order, so a rebuild after a transform change is how that change
reaches history. A rebuild is resumable: both stages keep their progress (the generation's transform
state, the target's ledger), so running it again with the same generation continues where it stopped.
"""
from typing import Any, Callable, Dict, Optional

from pg8000.native import Connection

from utils.errors import TotesysError
from utils.load.run import load_pending
from utils.logger import get_logger
from utils.rebuild.generation import GenerationS3, check_new, new_generation
from utils.transform.run import transform_pending

logger = get_logger("rebuild")


class RebuildError(TotesysError):
    """The rebuild cannot start: its target warehouse is not empty."""


def target_is_empty(conn: Connection) -> bool:
    """True when the target database has no loaded batch (no ledger, or an empty one)."""
    if conn.run("SELECT to_regclass('etl_load_ledger') IS NULL")[0][0]:
        return True
    return not conn.run("SELECT 1 FROM etl_load_ledger LIMIT 1")


def rebuild_warehouse(conn: Connection, s3_client: Any, ingest_bucket: str, processed_bucket: str,
                      generation: Optional[str] = None, connect: Optional[Callable[[], Connection]] = None
                      ) -> Dict[str, Any]:
    """Rebuild into the warehouse of ``conn`` (which must be empty, unless ``generation`` names a rebuild
    being resumed); return ``{"generation", "transformed": [batch ids], "loaded": [batch ids], "tables"}``.

    ``connect``: opens another connection to the same database (the load's staging helper). Raises
    RebuildError for a non-empty target of a new rebuild, ObjectExistsError when a new ``generation``
    exists already, and what the transform and load raise.
    """
    resume = generation is not None
    generation = generation or new_generation()
    if not resume:
        if not target_is_empty(conn):
            raise RebuildError("the rebuild's target warehouse already holds loaded batches: rebuild into an "
                               "empty (or new) database")
        check_new(s3_client, processed_bucket, generation)
    s3 = GenerationS3(s3_client, processed_bucket, generation)
    logger.info("rebuild started", generation=generation, resume=resume)
    transformed = transform_pending(s3, ingest_bucket, processed_bucket)
    loaded = load_pending(conn, s3, processed_bucket, connect=connect)
    logger.info("rebuild finished", generation=generation, batches=len(loaded["batches"]))
    return {"generation": generation, "transformed": transformed["batches"], "loaded": loaded["batches"],
            "tables": loaded["tables"]}
