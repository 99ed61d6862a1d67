"""Staging a batch's tables on a second connection while the batch's transaction merges (issue 11).

A load runs one transaction on one connection: while PostgreSQL merges one table, the next table's
``COPY ... FROM STDIN`` (CSV parsing, one core) waits its turn. Here a helper thread with its own
connection copies every table of the batch, in load order, into an UNLOGGED staging table
(``etl_stage_<table>``), each committed on its own; the batch's transaction waits for a table's stage only
when it reaches that table, and by then it is usually there. The stages are scratch: every write that
counts (dimensions, facts, parked rows, ledger) is still in the batch's ONE transaction, which drops the
stages before it commits.

Safe by construction:
- the helper starts after the batch's transaction holds the loads' advisory lock, so no other load uses
  the stage names; stages a crashed load left behind are dropped (and re-created) by the next helper;
- the batch's transaction runs at READ COMMITTED (set explicitly by ``merge.load_batch``), so each of its
  statements sees what the helper committed before it; and before a stage is used its row count, in the
  batch's transaction, must equal the rows the helper's COPY reported, else the batch fails
  (``StagingError``) rather than load less than it read;
- a helper that cannot start (no CREATE privilege, no second connection) is not an error: the batch stages
  in its own transaction's temporary tables, as before, with one INFO line.
"""
import threading
from concurrent.futures import Future
from typing import Any, Callable, Dict, Optional, Sequence

from pg8000.native import identifier

from utils.db.connection import close_db_connection, connection_lost, sqlstate
from utils.db.copy_in import csv_stream
from utils.errors import DatabaseUnavailableError, TotesysError
from utils.logger import get_logger

STAGE_PREFIX = "etl_stage_"

logger = get_logger("load")


class StagingError(TotesysError):
    """A staging table does not hold what the helper copied into it."""


def stage_name(table: str) -> str:
    return f"{STAGE_PREFIX}{table}"


class ParallelStaging:
    """Copies ``tables`` ({name: pyarrow Table}, in load order) into committed UNLOGGED stages on the
    connection ``connect()`` returns, in a thread. ``definitions(name)`` is the stage's column list
    (SQL), ``columns(name)`` the COPY's column list (SQL)."""

    def __init__(self, connect: Callable, tables: Dict, definitions: Callable, columns: Callable):
        self.futures: Dict[str, Future] = {name: Future() for name in tables}
        self._stop = threading.Event()
        self._connect, self._tables = connect, tables
        self._definitions, self._columns = definitions, columns
        self._thread = threading.Thread(target=self._run, name="load-staging", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as err:  # noqa: BLE001 - reported through every table's future
            self._fail_all(err)
            return
        try:
            for name, table in self._tables.items():
                if self._stop.is_set():
                    self.futures[name].cancel()
                    continue
                try:
                    self.futures[name].set_result(self._stage(conn, name, table))
                except BaseException as err:  # noqa: BLE001 - the batch's transaction re-raises it
                    self.futures[name].set_exception(err)
                    self._stop.set()
        finally:
            close_db_connection(conn)

    def _fail_all(self, err: BaseException) -> None:
        for future in self.futures.values():
            future.set_exception(err)

    def _stage(self, conn: Any, name: str, table: Any) -> int:
        stage = identifier(stage_name(name))
        conn.run(f"DROP TABLE IF EXISTS {stage}")
        conn.run(f"CREATE UNLOGGED TABLE {stage} ({self._definitions(name)})")
        rows = 0
        if table is not None and table.num_rows:
            conn.run(f"COPY {stage} ({self._columns(name)}) FROM STDIN WITH (FORMAT csv)",
                     stream=csv_stream(table))
            rows = conn.row_count
        return rows

    def stage(self, conn: Any, name: str) -> str:
        """The stage of ``name`` for the batch's transaction on ``conn``, once the helper committed it
        and ``conn`` sees all its rows. Raises the helper's error, or StagingError."""
        rows = self.futures[name].result()
        stage = identifier(stage_name(name))
        seen = conn.run(f"SELECT count(*) FROM {stage}")[0][0]  # nosec B608 - allow-listed name
        if seen != rows:
            raise StagingError(f"staging table {stage_name(name)} holds {seen} rows in the batch's "
                               f"transaction, the COPY wrote {rows}", table=name)
        return stage

    def close(self, conn: Any = None, names: Sequence[str] = ()) -> None:
        """Stop copying, wait for the helper; with ``conn``, drop the stages of ``names`` in its
        transaction (the batch's: they go with its COMMIT)."""
        self._stop.set()
        self._thread.join()
        for name in names:
            conn.run(f"DROP TABLE IF EXISTS {identifier(stage_name(name))}")


def start_staging(connect: Optional[Callable[[], Any]], tables: Dict[str, Any],
                  definitions: Callable[[str], str],
                  columns: Callable[[str], str]) -> Optional[ParallelStaging]:
    """A ParallelStaging of ``tables``, or None (one INFO line) when its connection cannot be made or
    the helper cannot create a table: the caller stages in its own transaction then."""
    if connect is None or not tables:
        return None
    staging = ParallelStaging(connect, tables, definitions, columns)
    first = next(iter(staging.futures.values()))
    try:
        first.result()
    except Exception as err:  # noqa: BLE001 - any reason: fall back, and say why
        staging.close()
        logger.info(f"staging in the batch's own transaction: {why_staging_failed(err)}",
                    error_type=type(err).__name__, error=str(err))
        return None
    return staging


def why_staging_failed(err: BaseException) -> str:
    """The helper's failure in words: the privilege the load user lacks (SQLSTATE 42501), the
    connection that could not be made, or the statement that failed."""
    code, detail = sqlstate(err)
    if code == "42501":
        return (f"the load user lacks the CREATE privilege on the warehouse schema ({detail.get('M')}); "
                "GRANT CREATE ON SCHEMA public TO it to stage on a second connection")
    if isinstance(err, DatabaseUnavailableError) or connection_lost(err):
        return f"the staging connection failed ({err})"
    reason = f"{code} {detail['M']}" if code else f"{type(err).__name__}: {err}"
    return f"the staging helper could not create its table ({reason})"
