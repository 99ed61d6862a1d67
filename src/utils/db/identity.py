"""Which database a connection reaches: the server's system identifier (``pg_control_system()``, fixed
when the cluster was made by initdb) and the database's name. Never a host, a user or a password.

The pipeline's state is only right for the databases it was built with: an ingest state pointer's
watermarks and key sets describe ONE source, a warehouse's ledger the batches of one pipeline. The
ingest state pointer (``source``) and the local state folder (``databases.json``) record the identities;
a run against another database is refused naming both, until it is re-pointed deliberately.
"""
from typing import Any, Mapping, Optional, TypedDict

import pg8000

from utils.errors import TotesysError


class DatabaseIdentity(TypedDict):
    """``system_identifier`` (text; None when the role may not read it) and ``database`` (its name)."""
    system_identifier: Optional[str]
    database: str


class DatabaseIdentityError(TotesysError):
    """A run reached a database other than the one its state was built with."""


def database_identity(conn: Any) -> DatabaseIdentity:
    """The identity of the database ``conn`` is connected to (run outside a failed transaction)."""
    try:
        system = conn.run("SELECT CAST(system_identifier AS text) FROM pg_control_system()")[0][0]
    except pg8000.exceptions.DatabaseError:  # a role denied the function: the name alone is compared
        system = None
    return {"system_identifier": system, "database": conn.run("SELECT current_database()")[0][0]}


def same_database(recorded: Mapping, found: Mapping) -> bool:
    """Whether two identities name one database: the same name, and the same server whenever both
    know its system identifier."""
    if recorded.get("database") != found.get("database"):
        return False
    systems = recorded.get("system_identifier"), found.get("system_identifier")
    return None in systems or systems[0] == systems[1]


def describe_identity(identity: Mapping) -> str:
    """``database "totesys" on server 7714742738803356740`` (the system identifier when known)."""
    system = identity.get("system_identifier")
    return f'database "{identity.get("database")}"' + (f" on server {system}" if system else "")


def check_identity(recorded: Optional[Mapping], found: Mapping, role: str, repoint_hint: str) -> None:
    """Raise DatabaseIdentityError naming both when ``recorded`` (None: nothing recorded yet) is not the
    database ``found``; ``repoint_hint`` says how to point the state at the new one deliberately."""
    if recorded and not same_database(recorded, found):
        raise DatabaseIdentityError(
            f"the {role} database is not the one this pipeline's state was built with: the state records "
            f"{describe_identity(recorded)}, this run reached {describe_identity(found)}. Point the "
            f"{role} back at the recorded database, or {repoint_hint}")
