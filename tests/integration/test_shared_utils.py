"""The small shared utils against moto and a real PostgreSQL: secrets, connections, the source schema file, S3
writes, state and manifests. Their pure rules are in tests/unit (test_config, test_format_time,
test_generate_file_key, test_logger, catalog/test_source, db/test_connection, aws/test_secrets)."""
import json

import boto3
import pytest

from utils.aws.secrets import db_connections_get_secret
from utils.compat import connect_to_db
from utils.db.connection import close_db_connection, credentials_from_url
from utils.errors import (CredentialsError, DatabaseUnavailableError, StateConflictError, UnknownTableError,
                          CorruptFileError, ObjectExistsError)
from utils.aws.objects import read_json
from utils.aws.state import read_state, write_state
from utils.catalog.source import SOURCE_SCHEMAS, check_source_table
from utils.aws.objects import write_to_s3
from tests.support.db import pgpass_file


# -- credentials and connections --------------------------------------------------------------------

def _secret(client, name, value):
    client.create_secret(Name=name, SecretString=value if isinstance(value, str) else json.dumps(value))


def test_get_secret_returns_the_credentials(aws):
    client = boto3.client("secretsmanager")
    creds = {"host": "h", "port": 5432, "database": "d", "user": "u", "password": "p"}
    _secret(client, "db", creds)
    assert db_connections_get_secret(client, "db") == creds


def test_get_secret_missing_key_is_named_and_value_never_shown(aws):
    client = boto3.client("secretsmanager")
    _secret(client, "db", {"host": "h", "port": 5432, "database": "d", "password": "hunter2"})
    with pytest.raises(CredentialsError, match="lacks key.*user") as err:
        db_connections_get_secret(client, "db")
    assert "hunter2" not in str(err.value)


def test_get_secret_absent_or_not_json(aws):
    client = boto3.client("secretsmanager")
    with pytest.raises(CredentialsError, match="cannot read secret 'nope'"):
        db_connections_get_secret(client, "nope")
    _secret(client, "text", "not json")
    with pytest.raises(CredentialsError, match="not a JSON object"):
        db_connections_get_secret(client, "text")
    _secret(client, "list", [1, 2])
    with pytest.raises(CredentialsError, match="not a JSON object"):
        db_connections_get_secret(client, "list")


def test_bad_port_in_secret(aws):
    client = boto3.client("secretsmanager")
    _secret(client, "db", {"host": "h", "port": "x", "database": "d", "user": "u", "password": "p"})
    with pytest.raises(CredentialsError, match="non-integer port"):
        db_connections_get_secret(client, "db")


def test_connect_real_server_in_utc(pg_admin_url):
    conn = connect_to_db(credentials=credentials_from_url(pg_admin_url))
    try:
        assert conn.run("SELECT current_setting('TimeZone')") == [["UTC"]]
    finally:
        close_db_connection(conn)
    close_db_connection(conn)  # closing twice is harmless


def test_connect_through_secret(aws, pg_admin_url):
    client = boto3.client("secretsmanager")
    _secret(client, "db", credentials_from_url(pg_admin_url))
    conn = connect_to_db(secret_name="db", secrets_client=client)
    assert conn.run("SELECT 1") == [[1]]
    conn.close()


def test_connect_wrong_password_is_clear_and_secret_free(pg_admin_url):
    creds = dict(credentials_from_url(pg_admin_url), password="wrong-pass-123")
    with pytest.raises(CredentialsError, match="refused the connection") as err:
        connect_to_db(credentials=creds)
    assert "wrong-pass-123" not in str(err.value)


def test_connect_unreachable_host_is_retryable(pg_admin_url):
    from totesys_local.cluster import free_port
    creds = dict(credentials_from_url(pg_admin_url), port=free_port(), password="s3cret-value")
    with pytest.raises(DatabaseUnavailableError, match="cannot reach database") as err:
        connect_to_db(credentials=creds)
    assert "s3cret-value" not in str(err.value)


# -- tables -----------------------------------------------------------------------------------------


def test_schema_file_matches_declared_columns(pg_admin_url, new_database):
    """The Arrow schemas list the real columns in physical order."""
    from pathlib import Path
    url = new_database()
    conn = connect_to_db(credentials=credentials_from_url(url))
    conn.run(Path(__file__).resolve().parents[2].joinpath("sql", "totesys_schema.sql").read_text())
    for table, schema in SOURCE_SCHEMAS.items():
        rows = conn.run("SELECT column_name FROM information_schema.columns WHERE table_name = :t "
                        "ORDER BY ordinal_position", t=table)
        assert [r[0] for r in rows] == schema.names, table
    conn.close()


# -- S3 writes and state ----------------------------------------------------------------------------

def test_write_to_s3_never_overwrites(buckets):
    s3 = boto3.client("s3")
    write_to_s3(s3, buckets["ingest"], "a/key.parquet", b"first")
    with pytest.raises(ObjectExistsError, match="already exists") as exists:
        write_to_s3(s3, buckets["ingest"], "a/key.parquet", b"second")
    # One error per meaning: an existing object is not a state conflict; the key is an attribute.
    assert not isinstance(exists.value, StateConflictError) and exists.value.key == "a/key.parquet"
    assert s3.get_object(Bucket=buckets["ingest"], Key="a/key.parquet")["Body"].read() == b"first"
    write_to_s3(s3, buckets["ingest"], "b.json", "text")
    import io
    write_to_s3(s3, buckets["ingest"], "c.bin", io.BytesIO(b"xyz"))
    assert s3.get_object(Bucket=buckets["ingest"], Key="c.bin")["Body"].read() == b"xyz"


def test_state_compare_and_swap(buckets):
    s3 = boto3.client("s3")
    bucket = buckets["ingest"]
    assert read_state(s3, bucket, "ingest") == ({}, None)
    write_state(s3, bucket, "ingest", {"n": 1}, None)
    state, etag = read_state(s3, bucket, "ingest")
    assert state == {"n": 1}
    with pytest.raises(StateConflictError):
        write_state(s3, bucket, "ingest", {"n": 99}, None)  # someone created it meanwhile
    write_state(s3, bucket, "ingest", {"n": 2}, etag)
    with pytest.raises(StateConflictError, match="another run") as conflict:
        write_state(s3, bucket, "ingest", {"n": 3}, etag)  # stale etag: lost the race
    assert conflict.value.key == "_state/ingest.json"
    assert read_state(s3, bucket, "ingest")[0] == {"n": 2}


def test_corrupt_state_and_manifest(buckets):
    s3 = boto3.client("s3")
    bucket = buckets["ingest"]
    s3.put_object(Bucket=bucket, Key="_state/ingest.json", Body=b"{not json")
    with pytest.raises(CorruptFileError, match="_state/ingest.json") as corrupt:
        read_state(s3, bucket, "ingest")
    assert corrupt.value.key == "_state/ingest.json"
    s3.put_object(Bucket=bucket, Key="_state/other.json", Body=b"[1]")
    with pytest.raises(CorruptFileError, match="not a JSON object"):
        read_state(s3, bucket, "other")
    s3.put_object(Bucket=bucket, Key="m.json", Body=b"[]")
    with pytest.raises(CorruptFileError):
        read_json(s3, bucket, "m.json")
    s3.put_object(Bucket=bucket, Key="n.json", Body=b"{{")
    with pytest.raises(CorruptFileError):
        read_json(s3, bucket, "n.json")


def test_read_manifest_checks_its_shape(buckets):
    from utils.aws.manifests import read_manifest
    s3 = boto3.client("s3")
    bucket = buckets["ingest"]

    def put(key, value):
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(value).encode())
        return key

    good = put("m1.json", {"batch_time": "t", "tables": {"address": {"key": "address/x.parquet"}}})
    assert read_manifest(s3, bucket, good, check_source_table, "batch_time")["batch_time"] == "t"
    with pytest.raises(CorruptFileError, match="lacks batch_time or tables"):
        read_manifest(s3, bucket, put("m2.json", {"tables": {}}), check_source_table, "batch_time")
    with pytest.raises(CorruptFileError, match="entry of 'address' has no file key") as corrupt:
        read_manifest(s3, bucket, put("m3.json", {"batch_time": "t", "tables": {"address": {}}}),
                      check_source_table, "batch_time")
    assert (corrupt.value.key, corrupt.value.table) == ("m3.json", "address")
    with pytest.raises(UnknownTableError) as unknown:
        read_manifest(s3, bucket, put("m4.json", {"batch_time": "t", "tables": {"nope": {"key": "k"}}}),
                      check_source_table, "batch_time")
    assert unknown.value.table == "nope"


def test_typed_manifest_readers_and_writers(buckets):
    from utils.aws.manifests import read_ingest_manifest, read_processed_manifest, write_ingest_manifest
    from utils.aws.state import read_ingest_state, read_transform_state, write_transform_state
    s3 = boto3.client("s3")
    bucket = buckets["ingest"]
    manifest = {"batch_id": "b1", "batch_time": "2026-01-01 00:00:00.000000", "timezone": "UTC",
                "ignored_columns": {}, "prev_manifest_key": None,
                "tables": {"address": {"key": "address/x.parquet", "rows": 1, "low": None,
                                       "high": "2026-01-01 00:00:00.000000", "snapshot": "1:1:"}}}
    write_ingest_manifest(s3, bucket, "_batches/m1.json", manifest)
    assert read_ingest_manifest(s3, bucket, "_batches/m1.json") == manifest
    with pytest.raises(ObjectExistsError):  # manifests are immutable
        write_ingest_manifest(s3, bucket, "_batches/m1.json", manifest)
    # An ingest manifest names source tables: read as a processed manifest, its table is refused.
    with pytest.raises(UnknownTableError):
        read_processed_manifest(s3, bucket, "_batches/m1.json")
    assert read_ingest_state(s3, bucket) == ({}, None) == read_transform_state(s3, bucket)
    etag = write_transform_state(s3, bucket, {"manifest_key": "p", "ingest_manifest_key": "i"}, None)
    assert read_transform_state(s3, bucket) == ({"manifest_key": "p", "ingest_manifest_key": "i"}, etag)
    with pytest.raises(StateConflictError):
        write_transform_state(s3, bucket, {"manifest_key": "q", "ingest_manifest_key": "i"}, None)


@pytest.fixture
def password_role(pg_admin_url):
    """A login role with a password on the real test cluster: (URL without password, password)."""
    import uuid
    role, password = f"pw_{uuid.uuid4().hex[:8]}", "Role-pw:9\\x"
    conn = connect_to_db(credentials=credentials_from_url(pg_admin_url))
    try:
        conn.run(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")  # nosec B608 - test values
    finally:
        close_db_connection(conn)
    admin = credentials_from_url(pg_admin_url)
    return f"postgresql://{role}@{admin['host']}:{admin['port']}/postgres", password


def _whoami(url):
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        return conn.run("SELECT current_user")[0][0]
    finally:
        close_db_connection(conn)


def test_real_server_password_via_pgpassword_or_pgpass(password_role, monkeypatch, tmp_path):
    url, password = password_role
    role = url.split("//")[1].split("@")[0]
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.setenv("PGPASSWORD", password)
    assert _whoami(url) == role
    monkeypatch.delenv("PGPASSWORD")
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    pgpass = pgpass_file(tmp_path, f"127.0.0.1:*:*:{role}:{escaped}\n")
    monkeypatch.setenv("PGPASSFILE", pgpass["PGPASSFILE"])
    assert _whoami(url) == role


def test_real_server_without_any_password_is_a_clear_error(password_role, monkeypatch, tmp_path):
    url, password = password_role
    monkeypatch.delenv("PGPASSWORD", raising=False)
    # a readable-by-all file is ignored, as libpq ignores it
    readable = pgpass_file(tmp_path, f"*:*:*:*:{password}\n", mode=0o644)
    monkeypatch.setenv("PGPASSFILE", readable["PGPASSFILE"])
    with pytest.raises(CredentialsError, match="no password was given") as err:
        _whoami(url)
    assert "PGPASSWORD" in str(err.value) and "0600" in str(err.value)
