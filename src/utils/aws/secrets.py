"""Database credentials from Secrets Manager, and the one check of a credentials dict."""
from typing import Any, Dict
import json

from botocore.exceptions import ClientError

from utils.errors import CredentialsError

CREDENTIAL_KEYS = ("host", "port", "database", "user", "password")
# The password may be empty: no password (trust, peer, certificate authentication).
REQUIRED_CREDENTIAL_KEYS = ("host", "port", "database", "user")


def db_connections_get_secret(client: Any, secret_name: str) -> Dict[str, Any]:
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


def validate_credentials(secret: Any, source: str) -> Dict[str, Any]:
    """Check a credentials dict; return a copy whose ``password`` is a string.

    host, port, database and user are required (CredentialsError naming the missing key(s) and
    ``source``, never a value); port must be an integer. An empty, null or absent password means
    "no password" (trust, peer or certificate authentication on the server) and becomes "".
    """
    if not isinstance(secret, dict):
        raise CredentialsError(f"secret {source!r} is not a JSON object")
    missing = [key for key in REQUIRED_CREDENTIAL_KEYS if key not in secret or secret[key] in (None, "")]
    if missing:
        raise CredentialsError(
            f"secret {source!r} lacks key(s): {', '.join(missing)}")
    try:
        int(secret["port"])
    except (TypeError, ValueError):
        raise CredentialsError(f"secret {source!r} has a non-integer port") from None
    return dict(secret, password=secret.get("password") or "")
