"""Extraction over several connections (INGEST_PARALLEL_CONNECTIONS): one snapshot for every table,
failures on either connection, the setting itself, and the same output as one connection."""
import threading
import time
import types
import uuid

import pg8000.exceptions
import pytest
from pg8000.native import identifier

import ingest
from utils.ingest import run as ingest_run
from utils.config import load_settings
from utils.errors import ConfigError, CredentialsError, DatabaseUnavailableError, TotesysError
from utils.ingest.snapshot import import_snapshot, largest_first
from utils.aws.state import read_state
from utils.catalog.source import PRIMARY_KEYS, SOURCE_SCHEMAS, SOURCE_TABLES
from tests.support.db import connect
from tests.support.ingest import assert_each_version_landed_once, read_table
from tests.support.ingest_mode import cdc_session
from totesys_local.aws_emulation import put_credentials_secret
from utils.aws.objects import list_keys
from tests.support.db import run_sql


def _copy_row(conn, table, **overrides):
    """Insert a copy of ``table``'s first row with last_updated = now() (the writer's transaction
    start) and ``overrides``; return the new primary key."""
    pk = PRIMARY_KEYS[table]
    columns = [name for name in SOURCE_SCHEMAS[table].names if name != pk]
    values = ["now()" if name == "last_updated" else f":{name}" if name in overrides else identifier(name)
              for name in columns]
    sql = (f"INSERT INTO {identifier(table)} ({', '.join(map(identifier, columns))}) "
           f"SELECT {', '.join(values)} FROM {identifier(table)} ORDER BY {identifier(pk)} LIMIT 1 "
           f"RETURNING {identifier(pk)}")
    return conn.run(sql, **overrides)[0][0]


def _late_rows(conn):
    """One new row in each of the eleven tables; return {table: new primary key}."""
    # transaction and payment have UNIQUE foreign keys: they get rows of their own below.
    new = {table: _copy_row(conn, table) for table in SOURCE_TABLES
           if table not in ("transaction", "payment")}
    new["transaction"] = _copy_row(conn, "transaction", sales_order_id=new["sales_order"],
                                   purchase_order_id=None)
    new["payment"] = _copy_row(conn, "payment", transaction_id=new["transaction"])
    return new


@pytest.fixture
def readers_of(monkeypatch):
    """Record which connection read each table, and make the first table of each of the two
    connections wait for the other's, so that both connections certainly read some tables."""
    read_by, barrier, lock = {}, threading.Barrier(2, timeout=20), threading.Lock()
    real_land = ingest_run._land_table

    def land(conn, extraction, table, *args):
        with lock:
            first = id(conn) not in read_by.values()
            read_by[table] = id(conn)
        if first:
            barrier.wait()
        return real_land(conn, extraction, table, *args)

    monkeypatch.setattr(ingest_run, "_land_table", land)
    # A test that runs again after a failure puts ``real`` back (the barrier is for one run).
    return types.SimpleNamespace(read_by=read_by, real=real_land)


@pytest.mark.cursor_only("a transaction open across the first run: CDC's slot waits for it (defect 10)")
def test_rows_committed_after_the_snapshot_are_invisible_to_both_connections(env, monkeypatch, readers_of):
    s3, bucket, url = env
    writer = connect(url)
    real_import = ingest_run.import_snapshot

    committed = []

    def commit_then_import(conn, snapshot_id):
        # The run has taken its snapshot on the main connection; the helper has not imported it yet.
        if not committed:
            committed.append(writer.run("COMMIT"))
        return real_import(conn, snapshot_id)

    monkeypatch.setattr(ingest_run, "import_snapshot", commit_then_import)
    try:
        writer.run("BEGIN")
        late = _late_rows(writer)
        first = ingest.lambda_handler({}, None)
    finally:
        writer.close()
    assert committed
    read_by = readers_of.read_by
    assert len(set(read_by.values())) == 2 and set(read_by) == set(SOURCE_TABLES)
    for table in SOURCE_TABLES:
        assert late[table] not in read_table(s3, bucket, first[table])[PRIMARY_KEYS[table]].to_pylist(), table
    # The late rows started before the batch time, so the next run must take exactly them.
    second = ingest.lambda_handler({}, None)
    assert sorted(second) == sorted(SOURCE_TABLES)
    for table in SOURCE_TABLES:
        assert read_table(s3, bucket, second[table])[PRIMARY_KEYS[table]].to_pylist() == [late[table]]
    assert_each_version_landed_once(s3, bucket, url)


@pytest.mark.parametrize("failing", ["main", "helper"])
def test_a_connection_lost_on_either_side_writes_no_manifest_and_keeps_the_state(
        env, monkeypatch, readers_of, pg_admin_url, failing):
    s3, bucket, url = env
    real_land = ingest_run._land_table  # the recording wrapper: both connections take a table
    killed = []

    def land(conn, *args):
        is_helper = threading.current_thread().name.startswith("ingest-read")
        if not killed and is_helper == (failing == "helper"):
            pid = conn.run("SELECT pg_backend_pid()")[0][0]
            killed.append(run_sql(pg_admin_url, "SELECT pg_terminate_backend(:pid)", pid=pid))
        return real_land(conn, *args)

    monkeypatch.setattr(ingest_run, "_land_table", land)
    # Wherever the read was (the server's FATAL, pg8000's "network error", the socket's reset), a lost
    # session is the retryable DatabaseUnavailableError.
    with pytest.raises(DatabaseUnavailableError, match=r"^lost the connection to database at .* \(totesys\) "
                                                       r"during "):
        ingest.lambda_handler({}, None)
    assert killed == [[[True]]]
    assert read_state(s3, bucket, "ingest") == ({}, None)
    assert not [key for key in list_keys(s3, bucket) if key.startswith("_batches/")]
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("ingest-")]
    monkeypatch.setattr(ingest_run, "_land_table", readers_of.real)
    assert sorted(ingest.lambda_handler({}, None)) == sorted(SOURCE_TABLES)
    assert_each_version_landed_once(s3, bucket, url)


@pytest.fixture
def one_connection_role(env, pg_admin_url, monkeypatch):
    """Wire the run to a role allowed one connection at a time; yields (s3, bucket, url)."""
    s3, bucket, url = env
    role = f"r_{uuid.uuid4().hex[:10]}"
    replication = " REPLICATION" if cdc_session() else ""  # CDC (make test-cdc) reads a replication slot
    run_sql(pg_admin_url, f"CREATE ROLE {identifier(role)} LOGIN{replication} PASSWORD 'pw' "
                          "CONNECTION LIMIT 1")
    run_sql(url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {identifier(role)}")
    host_part = url.split("@", 1)[1]
    put_credentials_secret("test/limited", f"postgresql://{role}:pw@{host_part}")
    monkeypatch.setenv("TOTESYS_SECRET_ID", "test/limited")
    yield s3, bucket, url, role
    run_sql(url, f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {identifier(role)}")
    run_sql(pg_admin_url, f"DROP ROLE {identifier(role)}")


def test_a_second_connection_that_cannot_be_opened_fails_clearly(one_connection_role, monkeypatch,
                                                                 pg_admin_url, ingest_log):
    s3, bucket, _, role = one_connection_role
    monkeypatch.setenv("INGEST_PARALLEL_CONNECTIONS", "2")
    with pytest.raises(CredentialsError, match="refused the connection: too many connections for role"):
        ingest.lambda_handler({}, None)
    assert [level for level, line in ingest_log if "too many connections" in line] == ["CRITICAL"]
    assert list_keys(s3, bucket) == []
    # The connection that was opened has been closed again (else the role's one slot stays taken).
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE usename = :role"
    for _ in range(200):
        if run_sql(pg_admin_url, sessions, role=role) == [[0]]:
            break
        time.sleep(0.05)
    assert run_sql(pg_admin_url, sessions, role=role) == [[0]]
    # The same role with the one-connection path lands everything.
    monkeypatch.setenv("INGEST_PARALLEL_CONNECTIONS", "1")
    assert sorted(ingest.lambda_handler({}, None)) == sorted(SOURCE_TABLES)


def test_one_and_two_connections_land_the_same_rows(env, monkeypatch, ingest_log_lines):
    s3, bucket, url = env
    monkeypatch.setenv("INGEST_PARALLEL_CONNECTIONS", "1")
    single = ingest.lambda_handler({}, None)
    s3.delete_object(Bucket=bucket, Key="_state/ingest.json")
    monkeypatch.setenv("INGEST_PARALLEL_CONNECTIONS", "2")
    double = ingest.lambda_handler({}, None)
    assert sorted(single) == sorted(double) == sorted(SOURCE_TABLES)
    for table in SOURCE_TABLES:
        assert read_table(s3, bucket, single[table]).equals(read_table(s3, bucket, double[table])), table
    assert ingest_log_lines == [1, 2]


@pytest.fixture
def ingest_log_lines(monkeypatch):
    """The ``connections`` field of every "snapshot taken" log record, in order."""
    seen = []
    real_info = ingest_run.logger.info

    def info(message, **fields):
        if message == "snapshot taken":
            seen.append(fields["connections"])
        return real_info(message, **fields)

    monkeypatch.setattr(ingest_run.logger, "info", info)
    return seen


def test_import_snapshot_checks_the_id_before_it_reaches_sql(source_url):
    exporter, importer = connect(source_url), connect(source_url)
    try:
        for bad in ["x'; DROP TABLE staff; --", "00000003-0000001B-1 ", "", None]:
            with pytest.raises(TotesysError, match="malformed exported snapshot id"):
                import_snapshot(importer, bad)
            assert importer.run("SELECT count(*) FROM staff") == [[1]]
        # Well formed but unknown: the server's error, and the transaction is rolled back.
        with pytest.raises(pg8000.exceptions.DatabaseError, match="invalid snapshot identifier"):
            import_snapshot(importer, "0000FFFF-0000FFFF-9")
        assert importer.run("SELECT count(*) FROM staff") == [[1]]
        exporter.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        exported = exporter.run("SELECT pg_export_snapshot()")[0][0]
        run_sql(source_url, "DELETE FROM payment")
        import_snapshot(importer, exported)
        assert importer.run("SELECT count(*) FROM payment") == [[1]]  # the exporter's view
        importer.run("ROLLBACK")
        exporter.run("ROLLBACK")
    finally:
        importer.close()
        exporter.close()


def test_largest_first_orders_by_size_on_disk(source_url):
    run_sql(source_url, "INSERT INTO design (created_at, design_name, file_location, file_name, "
                        "last_updated) SELECT now(), repeat('d', 200), '/x', 'f.json', now() "
                        "FROM generate_series(1, 2000)")
    conn = connect(source_url)
    try:
        order = largest_first(conn, list(SOURCE_TABLES))
    finally:
        conn.close()
    assert order[0] == "design" and sorted(order) == sorted(SOURCE_TABLES)
    # The others hold one page each: ties keep their order.
    assert order[1:] == [table for table in SOURCE_TABLES if table != "design"]


@pytest.mark.parametrize("value, expected", [(None, 2), ("1", 1), (" 3 ", 3), ("8", 8)])
def test_parallel_connections_setting(monkeypatch, value, expected):
    monkeypatch.setenv("INGEST_BUCKET", "b")
    monkeypatch.setenv("PROCESSED_BUCKET", "p")
    if value is None:
        monkeypatch.delenv("INGEST_PARALLEL_CONNECTIONS", raising=False)
    else:
        monkeypatch.setenv("INGEST_PARALLEL_CONNECTIONS", value)
    assert load_settings().ingest_parallel_connections == expected


@pytest.mark.parametrize("value", ["0", "9", "-1", "two", ""])
def test_bad_parallel_connections_setting(monkeypatch, value):
    monkeypatch.setenv("INGEST_BUCKET", "b")
    monkeypatch.setenv("PROCESSED_BUCKET", "p")
    monkeypatch.setenv("INGEST_PARALLEL_CONNECTIONS", value)
    with pytest.raises(ConfigError, match=f"INGEST_PARALLEL_CONNECTIONS must be an integer from 1 to 8, "
                                          f"got {value!r}"):
        load_settings()
