"""The databases a local state folder belongs to (issue 19, item 4).

``<state-dir>/databases.json`` records, for the source and the warehouse, the identity of the database
(``utils.db.identity``: server system identifier and database name), the URL without its password, and
whether it was the folder's embedded cluster. The first run records them; every later `totesys run` or
`retry` compares before doing anything else:
- a folder built with ``--source``/``--warehouse`` (or the environment's URLs) and run without them is
  refused BEFORE the embedded cluster is started or seeded (it would otherwise pair the folder's state
  with a demo database, and load that database's batch into the real warehouse on the next run);
- a URL that reaches another database is refused naming both.
``--repoint`` points the folder at this run's databases deliberately: the record is replaced and the
execution asks the ingest to accept the new source (``{"repoint_source": true}``). A database that cannot
be reached is not compared (the stage that needs it fails and alerts) and its record is kept.
"""
import json
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, TypedDict, Union

from totesys_local.local_state import write_atomically
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url, describe_url
from utils.db.identity import (DatabaseIdentity, DatabaseIdentityError, database_identity, describe_identity,
                               same_database)
from utils.errors import DatabaseUnavailableError

DATABASES_FILE = "databases.json"
ROLES = ("source", "warehouse")


class DatabaseRecord(TypedDict):
    """One role's entry of ``databases.json``: the URL without its password, whether it was the folder's
    embedded cluster, and the database's identity (``utils.db.identity.DatabaseIdentity``)."""
    url: str
    embedded: bool
    system_identifier: Optional[str]
    database: str


def recorded_databases(state_dir: Union[str, Path]) -> Dict[str, DatabaseRecord]:
    """{role: {url, embedded, system_identifier, database}} of the folder ({} before its first run)."""
    try:
        recorded: Dict[str, DatabaseRecord] = json.loads((Path(state_dir) / DATABASES_FILE).read_text())
        return recorded
    except FileNotFoundError:
        return {}


def refuse_missing_urls(state_dir: Union[str, Path], urls: Mapping[str, Optional[str]],
                        repoint: bool) -> None:
    """Raise DatabaseIdentityError when the folder belongs to a database given by URL and this run gives
    none for it (it would use the embedded cluster instead). ``urls``: {role: URL or None}."""
    if repoint:
        return
    for role, entry in recorded_databases(state_dir).items():
        if role in urls and not urls[role] and not entry.get("embedded"):
            raise DatabaseIdentityError(
                f"the state folder {state_dir} belongs to the {role} database {entry['url']} "
                f"({describe_identity(entry)}), given by URL: give it again (--{role} or "
                f"TOTESYS_{role.upper()}_URL). Without it this run would use the folder's embedded cluster "
                f"instead; add --repoint to do that deliberately")


def check_databases(state_dir: Union[str, Path], urls: Mapping[str, str], embedded: Mapping[str, bool],
                    repoint: bool, known: Optional[Mapping[str, Optional[DatabaseIdentity]]] = None,
                    write: bool = True) -> Dict[str, DatabaseRecord]:
    """Compare this run's databases (``urls``: {role: URL}; ``embedded``: {role: bool}) with the folder's
    record, then record them (``write``; else return the record for ``write_record`` to write once the
    run has landed something: a run that fails before that must not tie the folder to its databases).
    ``known``: {role: identity or None (unreachable)} already read by the caller, so as not to connect
    again. Raises DatabaseIdentityError naming both when one differs and
    ``repoint`` is false."""
    recorded = recorded_databases(state_dir)
    record = dict(recorded)
    known = known or {}
    for role in ROLES:
        found = known[role] if role in known else _identity(urls[role])
        if found is None:
            continue
        entry = recorded.get(role)
        if entry and not repoint and not same_database(entry, found):
            raise DatabaseIdentityError(
                f"the state folder {state_dir} belongs to the {role} database {entry['url']} "
                f"({describe_identity(entry)}); this run's {role} is {describe_url(urls[role])} "
                f"({describe_identity(found)}). Give the recorded database's URL, or add --repoint to "
                "point the folder at the new one deliberately (the pipeline goes on from the folder's "
                "state as it stands)")
        record[role] = {"url": describe_url(urls[role]), "embedded": bool(embedded[role]), **found}
    if write:
        write_record(state_dir, record)
    return record


def write_record(state_dir: Union[str, Path], record: Mapping[str, DatabaseRecord]) -> None:
    """Write ``record`` (check_databases') as the folder's databases, when it changed."""
    if record != recorded_databases(state_dir):
        write_atomically(Path(state_dir) / DATABASES_FILE, json.dumps(record, indent=2).encode())


def refuse_other_databases(state_dir: Union[str, Path],
                           found: Mapping[str, Tuple[str, DatabaseIdentity]]) -> None:
    """Raise DatabaseIdentityError when a database of ``found`` ({role: (URL, identity)}) is not the one the
    folder records for that role; records nothing. For the commands that read a folder's landing zone
    against the databases without running the pipeline (verify): another folder's databases would be
    reported as thousands of differences, and resync suggested for them."""
    recorded = recorded_databases(state_dir)
    for role, (url, identity) in found.items():
        entry = recorded.get(role)
        if entry and not same_database(entry, identity):
            raise DatabaseIdentityError(
                f"the state folder {state_dir} belongs to the {role} database {entry['url']} "
                f"({describe_identity(entry)}), not to {describe_url(url)} ({describe_identity(identity)}): "
                "give the recorded database's URL, or the state folder of this one")


def _identity(url: str) -> Optional[DatabaseIdentity]:
    try:
        conn = connect_to_db(credentials=credentials_from_url(url))
    except DatabaseUnavailableError:
        return None
    try:
        return database_identity(conn)
    finally:
        close_db_connection(conn)
