"""Tests for the small shared utils: settings, credentials, time formats, keys, S3 writes, state."""
import json
import logging
import os
from datetime import datetime

import boto3
import pytest

from utils.config import load_settings
from utils.aws.secrets import db_connections_get_secret, validate_credentials
from utils.compat import connect_to_db
from utils.db.connection import close_db_connection, credentials_from_url, password_for
from utils.errors import (ConfigError, CredentialsError, DatabaseUnavailableError, DateFormatError,
                          StateConflictError, UnknownTableError, CorruptFileError, ObjectExistsError)
from utils.format_time import format_time, parse_time
from utils.generate_file_key import generate_file_key
from utils.aws.objects import read_json
from utils.aws.state import read_state, write_state
from utils.catalog.source import SOURCE_SCHEMAS, SOURCE_TABLES, check_source_table
from utils.aws.objects import write_to_s3


# -- settings ---------------------------------------------------------------------------------------

def test_settings_read_from_environment(monkeypatch):
    monkeypatch.setenv("INGEST_BUCKET", "in")
    monkeypatch.setenv("PROCESSED_BUCKET", "out")
    monkeypatch.setenv("INGEST_OVERLAP_SECONDS", "120")
    settings = load_settings()
    assert (settings.ingest_bucket, settings.processed_bucket, settings.ingest_overlap_seconds) == \
        ("in", "out", 120)


def test_settings_missing_bucket_names_the_variable(monkeypatch):
    monkeypatch.delenv("INGEST_BUCKET", raising=False)
    monkeypatch.setenv("PROCESSED_BUCKET", "out")
    with pytest.raises(ConfigError, match="INGEST_BUCKET"):
        load_settings()


@pytest.mark.parametrize("bad", ["soon", "-5"])
def test_settings_reject_bad_overlap(monkeypatch, bad):
    monkeypatch.setenv("INGEST_BUCKET", "in")
    monkeypatch.setenv("PROCESSED_BUCKET", "out")
    monkeypatch.setenv("INGEST_OVERLAP_SECONDS", bad)
    with pytest.raises(ConfigError, match="INGEST_OVERLAP_SECONDS"):
        load_settings()


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


def test_credentials_from_url_round_trip():
    creds = credentials_from_url("postgresql://ann:p%40ss@db.example:6543/tote")
    assert creds == {"host": "db.example", "port": 6543, "database": "tote", "user": "ann",
                     "password": "p@ss"}
    with pytest.raises(CredentialsError, match="postgresql://"):
        credentials_from_url("mysql://x")


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


def test_connect_rejects_incomplete_credentials():
    with pytest.raises(CredentialsError, match="host"):
        connect_to_db(credentials={"port": 1, "database": "d", "user": "u", "password": "p"})


# -- times and keys ---------------------------------------------------------------------------------

def test_format_and_parse_time():
    moment = datetime(2024, 11, 3, 14, 20, 49, 962000)
    assert format_time(moment) == "2024-11-03 14:20:49.962000"
    assert parse_time("2024-11-03 14:20:49.962000") == moment
    assert parse_time("2024-11-03 14:20:49") == datetime(2024, 11, 3, 14, 20, 49)


@pytest.mark.parametrize("bad", ["2024/11/03", "", None, "2024-11-03T14:20:49"])
def test_parse_time_rejects_other_formats(bad):
    with pytest.raises(DateFormatError):
        parse_time(bad)


def test_format_time_rejects_non_datetimes():
    with pytest.raises(DateFormatError):
        format_time("2024-11-03")


def test_generate_file_key_scheme():
    key = generate_file_key("sales_order", datetime(2024, 1, 2, 3, 4, 5, 60708))
    assert key == "sales_order/2024/01/02/030405060708.parquet"
    manifest_key = generate_file_key("_batches", datetime(2024, 1, 2), "json")
    assert manifest_key == "_batches/2024/01/02/000000000000.json"
    with pytest.raises(DateFormatError):
        generate_file_key("t", "2024-01-02")
    with pytest.raises(ValueError):
        generate_file_key("../x", datetime(2024, 1, 2))


# -- tables -----------------------------------------------------------------------------------------

def test_eleven_source_tables_with_schemas():
    assert len(SOURCE_TABLES) == 11 and set(SOURCE_TABLES) == set(SOURCE_SCHEMAS)
    assert str(SOURCE_SCHEMAS["sales_order"].field("unit_price").type) == "decimal128(10, 2)"
    assert check_source_table("payment") == "payment"


@pytest.mark.parametrize("bad", ["_prisma_migrations", "address; DROP TABLE staff", "", None, 3])
def test_unknown_tables_rejected(bad):
    with pytest.raises(UnknownTableError, match="unknown table"):
        check_source_table(bad)


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


def test_logger_writes_one_json_object_per_line(tmp_path, monkeypatch):
    from utils.logger import get_logger
    path = tmp_path / "log.jsonl"
    monkeypatch.setenv("TOTESYS_LOG_FILE", str(path))
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"t{tmp_path.name}")
    logger = get_logger("ingest")
    logger.critical("stage failed", table="sales_order")
    for handler in logging.getLogger(f"t{tmp_path.name}-ingest").handlers:
        handler.flush()
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["level"] == "CRITICAL" and record["stage"] == "ingest"
    assert record["table"] == "sales_order"


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


def test_stage_handler_tags_the_run_and_times_it(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from utils.logger import stage_handler
    path = tmp_path / "log.jsonl"
    monkeypatch.setenv("TOTESYS_LOG_FILE", str(path))
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"h{tmp_path.name}")

    @stage_handler("load")
    def handler(event, context):
        get_logger("load").info("working")
        if event.get("fail"):
            raise ValueError("bad batch")
        return {"ok": True}

    from utils.logger import get_logger
    assert handler({}, SimpleNamespace(aws_request_id="req-1")) == {"ok": True}
    with pytest.raises(ValueError, match="bad batch"):
        handler({"fail": True}, None)
    for handler_ in logging.getLogger(f"h{tmp_path.name}-load").handlers:
        handler_.flush()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["message"], r.get("run_id")) for r in records[:2]] == [("working", "req-1"),
                                                                      ("load succeeded", "req-1")]
    assert records[1]["duration_ms"] >= 0 and records[1]["outcome"] == "succeeded"
    failed = next(r for r in records if r["message"] == "load failed" and r["level"] == "INFO")
    assert failed["outcome"] == "failed" and failed["run_id"] not in ("req-1", None)
    assert records[2]["run_id"] == failed["run_id"]
    critical = [r for r in records if r["level"] == "CRITICAL"]
    assert len(critical) == 1 and critical[0]["error_type"] == "ValueError"
    assert critical[0]["error"] == "bad batch" and critical[0]["run_id"] == failed["run_id"]


def test_credentials_without_a_password_mean_no_password():
    creds = {"host": "h", "port": 5432, "database": "d", "user": "u"}
    assert validate_credentials(creds, "x")["password"] == ""
    assert validate_credentials(dict(creds, password=None), "x")["password"] == ""
    with pytest.raises(CredentialsError, match=r"lacks key\(s\): database"):
        validate_credentials(dict(creds, database=""), "x")


def _pgpass(tmp_path, text, mode=0o600):
    path = tmp_path / "pgpass"
    path.write_text(text)
    os.chmod(path, mode)
    return {"PGPASSFILE": str(path)}


def test_password_file_follows_libpq_rules(tmp_path):
    creds = {"host": "db.example", "port": 5433, "database": "tote", "user": "ann"}
    lines = ("# comment\n"
             "other:5433:tote:ann:not-this-host\n"
             "db.example:5433:tote:bob:not-this-user\n"
             r"db.example:*:tote:ann:c\:olon\\back" "\n"
             "*:*:*:*:too-late\n")
    assert password_for(creds, _pgpass(tmp_path, lines)) == "c:olon\\back"
    assert password_for(dict(creds, user="zed"), _pgpass(tmp_path, lines)) == "too-late"
    # an escaped \* is a literal star, not a wildcard
    assert password_for(creds, _pgpass(tmp_path, r"\*:*:*:*:star" "\n")) == ""
    # group/world access: ignored, as libpq does
    assert password_for(creds, _pgpass(tmp_path, "*:*:*:*:open\n", mode=0o644)) == ""
    assert password_for(creds, {"PGPASSFILE": str(tmp_path / "absent")}) == ""
    # PGPASSWORD comes first
    assert password_for(creds, dict(_pgpass(tmp_path, lines), PGPASSWORD="env")) == "env"


def test_url_without_password_takes_it_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert credentials_from_url("postgresql://ann@db/tote")["password"] == "from-env"
    assert credentials_from_url("postgresql://ann:given@db/tote")["password"] == "given"
    assert credentials_from_url("postgresql://ann:@db/tote")["password"] == "from-env"  # empty = none
    with pytest.raises(CredentialsError, match="must look like .*got 'postgresql://ann@db:x/t'") as err:
        credentials_from_url("postgresql://ann:hunter2@db:x/t")
    assert "hunter2" not in str(err.value)


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
    pgpass = _pgpass(tmp_path, f"127.0.0.1:*:*:{role}:{escaped}\n")
    monkeypatch.setenv("PGPASSFILE", pgpass["PGPASSFILE"])
    assert _whoami(url) == role


def test_real_server_without_any_password_is_a_clear_error(password_role, monkeypatch, tmp_path):
    url, password = password_role
    monkeypatch.delenv("PGPASSWORD", raising=False)
    # a readable-by-all file is ignored, as libpq ignores it
    readable = _pgpass(tmp_path, f"*:*:*:*:{password}\n", mode=0o644)
    monkeypatch.setenv("PGPASSFILE", readable["PGPASSFILE"])
    with pytest.raises(CredentialsError, match="no password was given") as err:
        _whoami(url)
    assert "PGPASSWORD" in str(err.value) and "0600" in str(err.value)
