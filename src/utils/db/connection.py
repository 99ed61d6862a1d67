"""The one way to open a PostgreSQL connection (pg8000 native), to name a database without its
password, and to end a transaction when something has already gone wrong."""
import os
import socket
import stat
from urllib.parse import unquote, urlsplit

import pg8000.native

from utils.aws.secrets import validate_credentials
from utils.errors import CredentialsError, DatabaseUnavailableError

NO_PASSWORD_HINT = (  # nosec B105 - a message, not a password
    "; no password was given (none in the URL or secret, PGPASSWORD or the password file "
    "PGPASSFILE / ~/.pgpass, which is ignored unless its mode is 0600)")


def describe_url(url):
    """``url`` (a database URL, or a credentials dict) as ``postgresql://user@host:port/database``:
    never the password. Every message about a database URL names it this way."""
    if isinstance(url, dict):
        user = f"{url['user']}@" if url.get("user") else ""
        return f"postgresql://{user}{url.get('host')}:{url.get('port') or 5432}/{url.get('database')}"
    parts = urlsplit(url)
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = unquote(userinfo.split(":", 1)[0])
    try:
        host = f"{parts.hostname or ''}:{parts.port or 5432}"
    except ValueError:  # a port that is not a number: show it as written
        host = hostinfo
    scheme = parts.scheme or "postgresql"
    return f"{scheme}://{user + '@' if user else ''}{host}{parts.path}"


def credentials_from_url(url):
    """Turn ``postgresql://user[:password]@host[:port][/database]`` into a credentials dict.

    Port defaults to 5432, database to ``postgres``, user to ``postgres``. A URL without a password
    gets one as libpq tools do: PGPASSWORD, else the first matching line of the password file
    (PGPASSFILE, default ``~/.pgpass``), else none ("": the server may trust the user). Raises
    CredentialsError naming the URL without its password when it is not a postgresql:// URL.
    """
    parts = urlsplit(url)
    try:
        port = parts.port or 5432
    except ValueError:
        port = None
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or port is None:
        raise CredentialsError(
            "database URL must look like postgresql://user:password@host:port/database, "
            f"got {describe_url(url)!r}")
    credentials = {
        "host": parts.hostname,
        "port": port,
        "database": unquote(parts.path.lstrip("/")) or "postgres",
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
    }
    if not parts.password:  # absent or empty, as libpq treats an empty password
        credentials["password"] = password_for(credentials)
    return credentials


def password_for(credentials, environ=None):
    """The password libpq would use when none is given: PGPASSWORD, else the password file, else "".

    The password file is PGPASSFILE or ``~/.pgpass``; lines ``host:port:database:user:password``,
    ``*`` matches anything in the first four fields, ``\\`` escapes ``:`` and ``\\``, ``#`` starts a
    comment line. As in libpq, a file that group or others may read or write is ignored.
    """
    environ = os.environ if environ is None else environ
    if environ.get("PGPASSWORD"):
        return environ["PGPASSWORD"]
    path = environ.get("PGPASSFILE") or os.path.join(os.path.expanduser("~"), ".pgpass")
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode) or mode & (stat.S_IRWXG | stat.S_IRWXO):
            return ""
        with open(path, encoding="utf-8") as lines:
            entries = [_pgpass_fields(line) for line in lines if line.strip() and not line.startswith("#")]
    except OSError:
        return ""
    wanted = (credentials["host"], str(credentials["port"]), credentials["database"], credentials["user"])
    for fields in entries:
        if len(fields) >= 5 and all(wildcard or text == value
                                    for (text, wildcard), value in zip(fields, wanted)):
            return fields[4][0]
    return ""


def _pgpass_fields(line):
    """Split one password-file line on unescaped colons into (text, is_wildcard) pairs, the
    backslash escapes removed; only an unescaped lone ``*`` is a wildcard (libpq's rules)."""
    fields, current, escaped, literal = [], [], False, False
    for char in line.rstrip("\r\n"):
        if escaped:
            current.append(char)
            escaped, literal = False, True
        elif char == "\\":
            escaped = True
        elif char == ":":
            text = "".join(current)
            fields.append((text, text == "*" and not literal))
            current, literal = [], False
        else:
            current.append(char)
    text = "".join(current)
    fields.append((text, text == "*" and not literal))
    return fields


def connect_to_db(credentials, timezone="UTC"):
    """Return an open pg8000 native connection to ``credentials`` (a dict with host, port, database,
    user and password; checked by ``validate_credentials``) whose session time zone is ``timezone``.

    ``timezone=None`` sends no TimeZone startup parameter, so the session takes the database's
    configured default (ALTER DATABASE/ROLE ... SET timezone, else the server's setting).
    Raises DatabaseUnavailableError (retryable) when the server cannot be reached, and
    CredentialsError when it refuses the credentials; neither message holds the password.
    """
    credentials = validate_credentials(credentials, "credentials")
    where = f"{credentials['host']}:{credentials['port']}/{credentials['database']}"
    try:
        return pg8000.native.Connection(
            user=credentials["user"],
            password=credentials["password"],
            host=credentials["host"],
            port=int(credentials["port"]),
            database=credentials["database"],
            timeout=30,
            startup_params={"TimeZone": timezone} if timezone else None,
        )
    except pg8000.exceptions.InterfaceError as err:
        raise DatabaseUnavailableError(
            f"cannot reach database at {where}: {type(err).__name__}") from None
    except (socket.error, OSError) as err:
        raise DatabaseUnavailableError(
            f"cannot reach database at {where}: {type(err).__name__}") from None
    except pg8000.exceptions.DatabaseError as err:
        detail = err.args[0] if err.args and isinstance(err.args[0], dict) else {}
        # 28P01 invalid_password: with no password at all, say where one could have come from.
        hint = NO_PASSWORD_HINT if detail.get("C") == "28P01" and not credentials["password"] else ""
        raise CredentialsError(
            f"database at {where} refused the connection: "
            f"{detail.get('M', 'authentication failed')}{hint}") from None


def close_db_connection(conn):
    """Close a connection; closing one that is already closed is not an error."""
    try:
        conn.close()
    except pg8000.exceptions.InterfaceError:
        pass


def end_quietly(conn, sql="ROLLBACK", **params):
    """Run a clean-up statement that must not raise (``ROLLBACK`` of a transaction that is over or
    failed, ``pg_advisory_unlock``). Any failure of its own is swallowed: a broken connection must not
    hide the error being raised, and the server ends the transaction and releases the session's
    locks when the session ends anyway."""
    try:
        conn.run(sql, **params)
    except Exception:  # nosec B110 - the original error is re-raised by the caller
        pass
