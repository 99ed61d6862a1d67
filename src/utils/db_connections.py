"""Credentials from Secrets Manager and the one way to open a PostgreSQL connection."""
import json
import socket
from urllib.parse import unquote, urlsplit

import pg8000.native
from botocore.exceptions import ClientError

from utils.errors import CredentialsError, DatabaseUnavailableError

CREDENTIAL_KEYS = ("host", "port", "database", "user", "password")


def db_connections_get_secret(client, secret_name):
    """Return the secret ``secret_name`` as a dict with the five credential keys.

    Raises CredentialsError naming the secret (never its value) when it is missing,
    is not a JSON object, or lacks one of host, port, database, user, password.
    """
    try:
        response = client.get_secret_value(SecretId=secret_name)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        raise CredentialsError(
            f"cannot read secret {secret_name!r}: {code}") from None
    try:
        secret = json.loads(response["SecretString"])
    except (KeyError, TypeError, ValueError):
        raise CredentialsError(
            f"secret {secret_name!r} is not a JSON object") from None
    return validate_credentials(secret, secret_name)


def validate_credentials(secret, source):
    """Check a credentials dict has the five keys; return it. ``source`` names it in errors."""
    if not isinstance(secret, dict):
        raise CredentialsError(f"secret {source!r} is not a JSON object")
    missing = [key for key in CREDENTIAL_KEYS if key not in secret or secret[key] in (None, "")]
    if missing:
        raise CredentialsError(
            f"secret {source!r} lacks key(s): {', '.join(missing)}")
    try:
        int(secret["port"])
    except (TypeError, ValueError):
        raise CredentialsError(f"secret {source!r} has a non-integer port") from None
    return secret


def credentials_from_url(url):
    """Turn ``postgresql://user:pass@host:port/db`` into a credentials dict."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise CredentialsError(
            "database URL must look like postgresql://user:password@host:port/database")
    return {
        "host": parts.hostname,
        "port": parts.port or 5432,
        "database": unquote(parts.path.lstrip("/")) or "postgres",
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
    }


def connect_to_db(credentials=None, secret_name=None, secrets_client=None, timezone="UTC"):
    """Return an open pg8000 native connection whose session time zone is ``timezone``.

    ``timezone=None`` sends no TimeZone startup parameter, so the session takes the database's
    configured default (ALTER DATABASE/ROLE ... SET timezone, else the server's setting).

    Give either a credentials dict or a secret name (read with ``secrets_client``,
    default a new boto3 Secrets Manager client; the secret defaults to the totesys one).
    Raises DatabaseUnavailableError (retryable) when the server cannot be reached, and
    CredentialsError when it refuses the credentials; neither message holds the password.
    """
    if credentials is None:
        if secrets_client is None:
            import boto3
            secrets_client = boto3.client("secretsmanager")
        if secret_name is None:
            from utils.config import DEFAULT_TOTESYS_SECRET_ID
            secret_name = DEFAULT_TOTESYS_SECRET_ID
        credentials = db_connections_get_secret(secrets_client, secret_name)
    else:
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
        raise CredentialsError(
            f"database at {where} refused the connection: "
            f"{detail.get('M', 'authentication failed')}") from None


def close_db_connection(conn):
    """Close a connection; closing one that is already closed is not an error."""
    try:
        conn.close()
    except pg8000.exceptions.InterfaceError:
        pass
