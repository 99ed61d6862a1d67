"""The source an ingest state belongs to (issue 19, item 4): the state pointer's ``source`` holds the
identity (``utils.db.identity``) of the totesys database its watermarks and key sets were read from.

The first run records it; every later run compares before reading a row, and a run that reaches another
database (the secret pointed elsewhere) fails with DatabaseIdentityError naming both, landing nothing:
otherwise its rows would be cut by another database's watermarks and its keys diffed against another
database's, inventing deletions. Re-pointing is deliberate: start ONE execution with
``{"repoint_source": true}`` in its input (it reaches the ingest's event); that run records the new
source and goes on from the state as it stands.
"""
from typing import Any

from utils.contracts import IngestState
from utils.db.identity import check_identity, database_identity
from utils.errors import InvalidEventError

REPOINT_KEY = "repoint_source"


def repoint_requested(event: Any) -> bool:
    """Whether the event asks to re-point the state at the source it reaches (``repoint_source``: a
    boolean, absent = false). Raises InvalidEventError for any other value."""
    value = event.get(REPOINT_KEY, False) if isinstance(event, dict) else False
    if not isinstance(value, bool):
        raise InvalidEventError(f"{REPOINT_KEY} must be true or false, got {value!r}")
    return value


def with_source_identity(conn: Any, state: IngestState, repoint: bool = False) -> IngestState:
    """``state`` with ``source`` set to the identity of the database ``conn`` reaches; raises
    DatabaseIdentityError when the state records another one and ``repoint`` is false."""
    found = database_identity(conn)
    if not repoint:
        check_identity(state.get("source"), found, "source",
                       f'start one execution with {{"{REPOINT_KEY}": true}} to re-point the ingest state '
                       "at it deliberately (it goes on from the recorded watermarks)")
    updated = state.copy()
    updated["source"] = {"system_identifier": found["system_identifier"], "database": found["database"]}
    return updated
