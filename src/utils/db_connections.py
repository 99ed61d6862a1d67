"""Seed interface: credentials from Secrets Manager and PostgreSQL connections.

Thin façade over ``utils.aws.secrets`` and ``utils.db.connection`` (the code the handlers use);
``connect_to_db()`` with no arguments reads the totesys secret, as the seed's did.
"""
from utils.aws.secrets import CREDENTIAL_KEYS, db_connections_get_secret, validate_credentials
from utils.db import connection
from utils.db.connection import close_db_connection, credentials_from_url, describe_url, password_for

__all__ = ["CREDENTIAL_KEYS", "close_db_connection", "connect_to_db", "credentials_from_url",
           "db_connections_get_secret", "describe_url", "password_for", "validate_credentials"]


def connect_to_db(credentials=None, secret_name=None, secrets_client=None, timezone="UTC", role=None):
    """Return an open pg8000 native connection (``utils.db.connection.connect_to_db``).

    Give either a credentials dict or a secret name (read with ``secrets_client``, default a new
    boto3 Secrets Manager client; the secret defaults to the totesys one, whose TLS settings
    ``TOTESYS_SSLMODE``/``TOTESYS_SSLROOTCERT`` then apply unless ``role`` says otherwise). Raises as
    ``utils.db.connection.connect_to_db`` and ``db_connections_get_secret`` do.
    """
    if credentials is None:
        if secrets_client is None:
            import boto3
            secrets_client = boto3.client("secretsmanager")
        if secret_name is None:
            from utils.config import DEFAULT_TOTESYS_SECRET_ID
            secret_name = DEFAULT_TOTESYS_SECRET_ID
            role = role or "totesys"
        credentials = db_connections_get_secret(secrets_client, secret_name)
    return connection.connect_to_db(credentials, timezone=timezone, role=role)
