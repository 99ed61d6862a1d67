"""The one way to open a PostgreSQL connection (pg8000 native), to name a database without its
password, and to end a transaction when something has already gone wrong."""
from typing import Any, Dict, List, Mapping, Optional, Tuple
import os
import socket
import ssl
import stat
import time
from urllib.parse import unquote, urlsplit

import pg8000.native

from utils.aws.secrets import validate_credentials
from utils.db.tls import ssl_context, tls_settings
from utils.errors import CredentialsError, DatabaseUnavailableError, TlsError

NO_PASSWORD_HINT = (  # nosec B105 - a message, not a password
    "; no password was given (none in the URL or secret, PGPASSWORD or the password file "
    "PGPASSFILE / ~/.pgpass, which is ignored unless its mode is 0600)")


class _UrlParts:
    """A database URL cut the way a person writes one: ``scheme://[user[:password]@]host[:port][/db]``.

    The user information runs from ``://`` to the LAST ``@``, so a password may hold ``/ # ? @ :`` and
    ``%`` unencoded (urllib would cut it at the first ``/``, ``?`` or ``#`` and take the rest for the
    host or the database: the password would end up in a message). Only ``user`` and ``password``
    come from that part; every other field comes from what follows the ``@``."""

    def __init__(self, url: Any) -> None:
        scheme, separator, rest = str(url).partition("://")
        if not separator:
            scheme, rest = "", str(url)
        userinfo, at, hostpart = rest.rpartition("@")
        self.scheme = scheme
        self.has_at = bool(at)
        user, _, password = userinfo.partition(":")
        self.user, self.password = unquote(user), unquote(password)
        self.hostpart = urlsplit("//" + hostpart)

    @property
    def hostname(self) -> Optional[str]:
        return self.hostpart.hostname

    @property
    def port(self) -> Optional[int]:
        """The port as a number (5432 when absent), or None when it is not a number."""
        try:
            return self.hostpart.port or 5432
        except ValueError:
            return None

    @property
    def database(self) -> str:
        return unquote(self.hostpart.path.lstrip("/"))


def describe_url(url: Any) -> str:
    """``url`` (a database URL, or a credentials dict) as ``postgresql://user@host:port/database``:
    never the password, whatever characters it holds. Every message about a database URL names it
    this way."""
    if isinstance(url, dict):
        user = f"{url['user']}@" if url.get("user") else ""
        return f"postgresql://{user}{url.get('host')}:{url.get('port') or 5432}/{url.get('database')}"
    parts = _UrlParts(url)
    user = f"{parts.user}@" if parts.user else ""
    scheme = parts.scheme or "postgresql"
    if parts.port is None:  # a port that is not a number: show what follows the "@" as written
        if not parts.has_at:  # no "@" at all: "user:secret" may have been meant, show the host alone
            return f"{scheme}://{user}{parts.hostname or ''}:<port not a number>"
        return f"{scheme}://{user}{parts.hostpart.netloc}{parts.hostpart.path}"
    return f"{scheme}://{user}{parts.hostname or ''}:{parts.port}{parts.hostpart.path}"


def credentials_from_url(url: str) -> Dict[str, Any]:
    """Turn ``postgresql://user[:password]@host[:port][/database]`` into a credentials dict.

    Port defaults to 5432, database to ``postgres``, user to ``postgres``. The password may be
    percent-encoded or written as it is, whatever characters it holds (``_UrlParts``). A URL without a
    password gets one as libpq tools do: PGPASSWORD, else the first matching line of the password file
    (PGPASSFILE, default ``~/.pgpass``), else none ("": the server may trust the user). Raises
    CredentialsError naming the URL without its password when it is not a postgresql:// URL.
    """
    parts = _UrlParts(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or parts.port is None:
        raise CredentialsError(
            "database URL must look like postgresql://user:password@host:port/database, "
            f"got {describe_url(url)!r}")
    credentials = {
        "host": parts.hostname,
        "port": parts.port,
        "database": parts.database or "postgres",
        "user": parts.user or "postgres",
        "password": parts.password,
    }
    if not parts.password:  # absent or empty, as libpq treats an empty password
        credentials["password"] = password_for(credentials)
    return credentials


def password_for(credentials: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None) -> str:
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


def _pgpass_fields(line: str) -> List[Tuple[str, bool]]:
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


# Connect (TCP + TLS + authentication) must answer within this many seconds.
CONNECT_TIMEOUT_SECONDS = 30
# Outside a Lambda invocation (no deadline: scripts, tests calling code directly): the server cancels any
# statement running longer (SQLSTATE 57014, not retried); Lambda's own ceiling is 15 minutes.
STATEMENT_TIMEOUT_SECONDS = 900
# Inside an invocation the session's budget is the function's remaining time at connect minus this margin:
# the statement is cancelled by the server (its locks released, the transaction rolled back) while the
# function still lives to log the error and return it, rather than being killed by Lambda's timeout with
# the database running the statement on, holding its locks, for the rest of a 900 s statement_timeout.
DEADLINE_MARGIN_SECONDS = 10
MINIMUM_BUDGET_SECONDS = 1
# Once connected, a read waits the statement budget plus this: the server's clear statement_timeout error
# comes first, and the socket timeout only catches a peer that vanished without closing the connection.
READ_TIMEOUT_MARGIN_SECONDS = 5
READ_TIMEOUT_SECONDS = STATEMENT_TIMEOUT_SECONDS + 60

# The running invocation's deadline (time.monotonic()), set by utils.logger.stage_handler from the Lambda
# context. Process-wide, not per thread: one process serves one invocation at a time (Lambda, and the local
# emulation), and the stages open connections from worker threads too.
_deadline = None


def set_invocation_deadline(context: Any) -> None:
    """Start (``context`` with ``get_remaining_time_in_millis``) or end (None) the invocation's deadline."""
    global _deadline
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    _deadline = None if remaining is None else time.monotonic() + remaining() / 1000


def session_timeouts() -> Tuple[float, float, float]:
    """(statement/lock timeout s, idle-in-transaction timeout s, socket read timeout s) for a connection
    opened now: from the invocation's remaining time minus DEADLINE_MARGIN_SECONDS, or the defaults
    outside an invocation. A transaction left idle longer than the function can still live is ended by
    the server (a timed-out function never comes back to commit or roll back)."""
    if _deadline is None:
        return STATEMENT_TIMEOUT_SECONDS, STATEMENT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS
    remaining = max(_deadline - time.monotonic(), 0)
    budget = max(remaining - DEADLINE_MARGIN_SECONDS, MINIMUM_BUDGET_SECONDS)
    return budget, max(remaining, budget), budget + READ_TIMEOUT_MARGIN_SECONDS


# SQLSTATEs of a server that ended or refused the session for a reason of its own, not the statement's:
# class 08 (connection exception), 57P01 admin_shutdown (pg_terminate_backend, a fast shutdown),
# 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up, in recovery).
CONNECTION_LOST_CLASSES = ("08",)
CONNECTION_LOST_STATES = ("57P01", "57P02", "57P03")


def sqlstate(err: BaseException) -> Tuple[str, Dict[str, Any]]:
    """(SQLSTATE, pg8000's error fields) of a pg8000 error; ("", {}) for any other."""
    detail = err.args[0] if err.args and isinstance(err.args[0], dict) else {}
    return detail.get("C", ""), detail


def connection_lost(err: BaseException) -> bool:
    """True when ``err`` (raised by pg8000 or the socket) means the session is gone, not that the
    statement was wrong: pg8000's InterfaceError (network error, closed connection), an OSError from
    the socket, or a DatabaseError whose SQLSTATE is in class 08 or CONNECTION_LOST_STATES."""
    if isinstance(err, (pg8000.exceptions.InterfaceError, OSError)):
        return True
    if isinstance(err, pg8000.exceptions.DatabaseError):
        code, _ = sqlstate(err)
        return code in CONNECTION_LOST_STATES or code[:2] in CONNECTION_LOST_CLASSES
    return False


class Connection(pg8000.native.Connection):
    """A pg8000 native connection whose every statement (queries, COPY in and out, COMMIT) turns a lost
    session into DatabaseUnavailableError naming the database and the statement's first word (never
    its text or parameters). ``described`` names the database: ``database at host:port/name (role)``."""

    described = "database"

    def run(self, sql: str, stream: Any = None, types: Any = None, **params: Any) -> Any:
        try:
            return super().run(sql, stream=stream, types=types, **params)
        except (pg8000.exceptions.Error, OSError) as err:
            if not connection_lost(err):
                raise
            code, detail = sqlstate(err)
            reason = f"{code} {detail.get('M', '')}".strip() if code else type(err).__name__
            verb = sql.split(None, 1)[0].upper() if sql.strip() else "statement"
            raise DatabaseUnavailableError(
                f"lost the connection to {self.described} during {verb}: {reason}") from None


def network_reason(err: BaseException) -> str:
    """Why a connection could not be made, in words: "connection refused", "timed out", "host name
    not found (...)"; the socket's own error is found behind pg8000's InterfaceError (its cause)."""
    seen: Optional[BaseException] = err
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    if isinstance(seen, ConnectionRefusedError):
        return "connection refused (is the server running and accepting TCP connections on that port?)"
    if isinstance(seen, (socket.timeout, TimeoutError)):
        return f"timed out after {CONNECT_TIMEOUT_SECONDS} s"
    if isinstance(seen, socket.gaierror):
        return f"host name not found ({seen.strerror or seen})"
    if isinstance(seen, OSError):
        return f"{seen.strerror or type(seen).__name__} ({type(seen).__name__})"
    return f"{type(err).__name__}: {err}"


def connect_to_db(credentials: Mapping[str, Any], timezone: Optional[str] = "UTC",
                  role: Optional[str] = None) -> Any:
    """Return an open connection (``Connection``, a pg8000 native connection) to ``credentials`` (a
    dict with host, port, database, user and password; checked by ``validate_credentials``) whose
    session time zone is ``timezone``.

    ``timezone=None`` sends no TimeZone startup parameter, so the session takes the database's
    configured default (ALTER DATABASE/ROLE ... SET timezone, else the server's setting).
    ``role`` (``"totesys"``, ``"warehouse"`` or None) picks the TLS settings: ``<ROLE>_SSLMODE`` and
    ``<ROLE>_SSLROOTCERT`` (``utils.db.tls``; None reads no variable: verify-full with the system
    trust store, or plaintext for a loopback host). The session's statement_timeout, lock_timeout,
    idle_in_transaction_session_timeout and the socket's read timeout follow ``session_timeouts``: the
    running invocation's remaining time (``set_invocation_deadline``), else STATEMENT_TIMEOUT_SECONDS.

    Raises DatabaseUnavailableError (retryable) when the server cannot be reached or ends the session
    while it starts, TlsError when the TLS handshake fails for good (certificate not verified, host
    name mismatch, server without TLS), ConfigError for bad TLS settings, and CredentialsError when the
    server refuses the credentials. No message holds the password.
    """
    credentials = validate_credentials(credentials, "credentials")
    where = (f"database at {credentials['host']}:{credentials['port']}/{credentials['database']}"
             + (f" ({role})" if role else ""))
    settings = tls_settings(role, credentials["host"])
    context = ssl_context(settings, where)
    budget, idle, read_timeout = session_timeouts()
    startup = {"statement_timeout": f"{int(budget * 1000)}ms", "lock_timeout": f"{int(budget * 1000)}ms",
               "idle_in_transaction_session_timeout": f"{int(idle * 1000)}ms"}
    if timezone:
        startup["TimeZone"] = timezone
    try:
        conn = Connection(
            user=credentials["user"],
            password=credentials["password"],
            host=credentials["host"],
            port=int(credentials["port"]),
            database=credentials["database"],
            timeout=CONNECT_TIMEOUT_SECONDS,
            ssl_context=context,
            startup_params=startup,
        )
    except ssl.SSLCertVerificationError as err:
        raise TlsError(f"cannot connect to {where} with sslmode {settings.mode}: the server's "
                       f"certificate was not accepted: {err.verify_message}") from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError) as err:
        raise DatabaseUnavailableError(
            f"cannot reach {where}: the connection closed during the TLS handshake "
            f"({type(err).__name__})") from None
    except ssl.SSLError as err:
        raise TlsError(f"cannot connect to {where} with sslmode {settings.mode}: TLS handshake failed: "
                       f"{err.reason or type(err).__name__}") from None
    except pg8000.exceptions.InterfaceError as err:
        if str(err) == "Server refuses SSL":
            raise TlsError(f"cannot connect to {where} with sslmode {settings.mode}: the server does "
                           "not accept TLS connections") from None
        raise DatabaseUnavailableError(f"cannot reach {where}: {network_reason(err)}") from None
    except OSError as err:
        raise DatabaseUnavailableError(f"cannot reach {where}: {network_reason(err)}") from None
    except pg8000.exceptions.DatabaseError as err:
        code, detail = sqlstate(err)
        if connection_lost(err):
            raise DatabaseUnavailableError(
                f"cannot reach {where}: {code} {detail.get('M', '')}".rstrip()) from None
        # 28P01 invalid_password: with no password at all, say where one could have come from.
        hint = NO_PASSWORD_HINT if code == "28P01" and not credentials["password"] else ""
        raise CredentialsError(
            f"{where} refused the connection: "
            f"{detail.get('M', 'authentication failed')}{hint}") from None
    conn.described = where
    # pg8000 keeps one timeout for connecting and reading; reads get theirs.
    conn._usock.settimeout(read_timeout)
    _no_delay(conn._usock)
    return conn


def _no_delay(sock: Any) -> None:
    """Turn off Nagle's algorithm on a TCP connection. pg8000 writes a COPY ... FROM STDIN as small
    writes (message header, data, CopyDone, Sync): with Nagle on, the last ones wait for the server's
    delayed ACK, 40 ms on Linux, for every COPY IN whatever its size (a scale-10 load ran ~15 of them).
    libpq sets TCP_NODELAY for the same reason."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def close_db_connection(conn: Any) -> None:
    """Close a connection; closing one that is already closed is not an error."""
    try:
        conn.close()
    except pg8000.exceptions.InterfaceError:
        pass


def end_quietly(conn: Any, sql: str = "ROLLBACK", **params: Any) -> None:
    """Run a clean-up statement that must not raise (``ROLLBACK`` of a transaction that is over or
    failed, ``pg_advisory_unlock``). Any failure of its own is swallowed: a broken connection must not
    hide the error being raised, and the server ends the transaction and releases the session's
    locks when the session ends anyway."""
    try:
        conn.run(sql, **params)
    except Exception:  # nosec B110 - the original error is re-raised by the caller
        pass
