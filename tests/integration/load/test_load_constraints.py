"""Foreign keys suspended for a large load and validated set-wise at its end, and the load's bounded lock
waits (utils/load/constraints.py, utils/load/locks.py), on a real warehouse."""
import threading
from datetime import date

import boto3
import pyarrow as pa
import pytest

import load
import transform
from totesys_local.aws_emulation import put_credentials_secret
from tests.support.db import run_sql as query
from tests.support.batches import (T0, base_batch, later, payment, sales_order, staff, stamps,
                                   write_ingest_batch)
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.errors import ConcurrentRunError, ForeignKeyViolationError
from utils.load import constraints, locks, merge, run as load_run
from utils.load.schema import ensure_warehouse_schema

FACT_TABLES = ("fact_payment", "fact_purchase_order", "fact_sales_order")
CONSTRAINTS = ("SELECT c.relname, con.conname, pg_get_constraintdef(con.oid), con.oid::bigint "
               "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
               "WHERE con.contype = 'f' AND c.relname = ANY(:tables) ORDER BY 1, 2")


def definitions(url):
    """[[table, constraint, definition]] of every fact foreign key."""
    return [row[:3] for row in query(url, CONSTRAINTS, tables=list(FACT_TABLES))]


def oids(url):
    return {(row[0], row[1]): row[3] for row in query(url, CONSTRAINTS, tables=list(FACT_TABLES))}


@pytest.fixture
def s3(buckets):
    return boto3.client("s3")


@pytest.fixture
def warehouse(pipeline_env, warehouse_url):
    """A warehouse with its schema, one fact key made DEFERRABLE and one NOT VALID (so re-creation
    must keep both), wired as the load's secret."""
    pipeline_env(warehouse_url=warehouse_url)
    conn = connect_to_db(credentials_from_url(warehouse_url))
    try:
        ensure_warehouse_schema(conn)
        conn.run("ALTER TABLE fact_sales_order ALTER CONSTRAINT fact_sales_order_design_id_fkey "
                 "DEFERRABLE INITIALLY DEFERRED")
        conn.run("ALTER TABLE fact_payment DROP CONSTRAINT fact_payment_transaction_id_fkey")
        conn.run("ALTER TABLE fact_payment ADD CONSTRAINT fact_payment_transaction_id_fkey "
                 "FOREIGN KEY (transaction_id) REFERENCES dim_transaction (transaction_id) NOT VALID")
    finally:
        close_db_connection(conn)
    return warehouse_url


@pytest.fixture
def always_setwise(monkeypatch):
    monkeypatch.setattr(constraints, "SETWISE_MIN_ROWS", 1)
    monkeypatch.setattr(constraints, "SETWISE_MIN_FRACTION", 0)


def run_pipeline(s3, buckets, batch):
    write_ingest_batch(s3, buckets["ingest"], T0, batch)
    return load.lambda_handler(transform.lambda_handler({}, None), None)


def validated(url):
    """{constraint: convalidated} of every fact foreign key."""
    return dict(query(url, "SELECT conname, convalidated FROM pg_constraint con JOIN pg_class c "
                           "ON c.oid = con.conrelid WHERE con.contype = 'f' AND c.relname = ANY(:t)",
                      t=list(FACT_TABLES)))


def suspended(url):
    return query(url, "SELECT table_name, constraint_name, re_added FROM etl_suspended_foreign_key "
                      "ORDER BY 1, 2")


def messages(caplog, text):
    return [r for r in caplog.records if r.getMessage().startswith(text)]


def test_a_large_load_suspends_the_keys_and_restores_every_one_exactly(
        s3, buckets, warehouse, always_setwise, caplog):
    before, before_oids, before_valid = definitions(warehouse), oids(warehouse), validated(warehouse)
    assert any("DEFERRABLE INITIALLY DEFERRED" in row[2] for row in before)
    assert any(row[2].endswith("NOT VALID") for row in before)
    result = run_pipeline(s3, buckets, base_batch())
    assert result["tables"]["fact_sales_order"] == 2 and result["rejected_rows"] == 0
    assert definitions(warehouse) == before and validated(warehouse) == before_valid
    # every key was re-created (new oids): suspended for the execution, validated once at its end
    assert not set(oids(warehouse).values()) & set(before_oids.values())
    assert len(messages(caplog, "foreign keys suspended for this execution")) == len(FACT_TABLES)
    assert len(messages(caplog, "foreign keys restored and validated set-wise")) == 1
    assert suspended(warehouse) == []


def test_a_small_append_keeps_the_row_by_row_checks(s3, buckets, warehouse, caplog):
    """Below the measured threshold nothing is dropped (the default thresholds, a 2-row batch)."""
    before = oids(warehouse)
    run_pipeline(s3, buckets, base_batch())
    assert oids(warehouse) == before
    assert not messages(caplog, "foreign keys suspended")


def test_keys_stay_suspended_between_rounds_and_are_validated_after_the_last(
        s3, buckets, warehouse, always_setwise, caplog):
    """A bounded backfill (``more_waiting``): the keys are suspended by the first round, stay so while
    rounds follow (no per-round re-validation of the whole table) and come back after the last one;
    a dangling row in a middle round is parked by the batch itself, never appended."""
    before = definitions(warehouse)
    write_ingest_batch(s3, buckets["ingest"], T0, base_batch())
    first = load.lambda_handler({**transform.lambda_handler({}, None), "more_waiting": True}, None)
    assert first["tables"]["fact_sales_order"] == 2
    assert {row[0] for row in suspended(warehouse)} == set(FACT_TABLES)
    assert definitions(warehouse) == []  # no fact key while the backfill appends
    orders = [sales_order(3, at=later(4)), sales_order(4, at=later(4), design_id=99)]
    write_ingest_batch(s3, buckets["ingest"], later(5), {"sales_order": orders})
    second = load.lambda_handler({**transform.lambda_handler({}, None), "more_waiting": True}, None)
    assert second["tables"]["fact_sales_order"] == 1 and second["rejected"] == {"sales_order": 1}
    assert parked(warehouse) == [["sales_order", 4, "design_id", True]]
    assert not messages(caplog, "foreign keys restored")
    last = load.lambda_handler(transform.lambda_handler({}, None), None)  # nothing new: the last round
    assert last["batches"] == []
    assert definitions(warehouse) == before and suspended(warehouse) == []
    assert query(warehouse, "SELECT sales_order_id FROM fact_sales_order ORDER BY 1") == [[1], [2], [3]]


def test_a_load_killed_while_the_keys_are_suspended_is_finished_by_the_next_run(
        s3, buckets, warehouse, always_setwise, monkeypatch):
    """A crash after the suspension (here: the batch fails) leaves the records; the batch rolled back;
    the next run, however small, loads it with its own reference checks and restores every key."""
    before = definitions(warehouse)
    real_load_batch = load_run.load_batch

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-load")
    monkeypatch.setattr(load_run, "load_batch", crash)
    with pytest.raises(RuntimeError):
        run_pipeline(s3, buckets, base_batch())
    assert {row[0] for row in suspended(warehouse)} == set(FACT_TABLES)
    assert query(warehouse, "SELECT count(*) FROM etl_load_ledger")[0][0] == 0
    monkeypatch.setattr(load_run, "load_batch", real_load_batch)
    monkeypatch.setattr(constraints, "SETWISE_MIN_ROWS", 10 ** 9)  # the retry alone would not suspend
    result = load.lambda_handler({}, None)
    assert result["tables"]["fact_sales_order"] == 2
    assert definitions(warehouse) == before and suspended(warehouse) == []


def _leave_keys_to_validate(s3, buckets, monkeypatch):
    """A run killed before its VALIDATEs: its keys re-added NOT VALID, recorded for the next one."""
    real_validate = constraints._validate

    def crash(*args):
        raise RuntimeError("killed before VALIDATE")
    monkeypatch.setattr(constraints, "_validate", crash)
    with pytest.raises(RuntimeError):
        run_pipeline(s3, buckets, base_batch())
    monkeypatch.setattr(constraints, "_validate", real_validate)


def test_a_crash_between_re_add_and_validate_is_validated_by_the_next_run(
        s3, buckets, warehouse, always_setwise, monkeypatch):
    before, before_valid = definitions(warehouse), validated(warehouse)
    _leave_keys_to_validate(s3, buckets, monkeypatch)
    assert query(warehouse, "SELECT count(*) FROM etl_load_ledger")[0][0] == 1
    assert suspended(warehouse) and all(row[2] for row in suspended(warehouse))
    assert not all(validated(warehouse).values())
    load.lambda_handler({}, None)
    assert definitions(warehouse) == before and validated(warehouse) == before_valid
    assert suspended(warehouse) == []


def test_use_setwise_follows_both_thresholds(warehouse):
    conn = connect_to_db(credentials_from_url(warehouse))
    try:
        assert not constraints.use_setwise(conn, "fact_sales_order", constraints.SETWISE_MIN_ROWS - 1)
        assert constraints.use_setwise(conn, "fact_sales_order", constraints.SETWISE_MIN_ROWS)
        conn.run("UPDATE pg_class SET reltuples = :rows WHERE relname = 'fact_sales_order'",
                 rows=constraints.SETWISE_MIN_ROWS * 100)
        assert not constraints.use_setwise(conn, "fact_sales_order", constraints.SETWISE_MIN_ROWS)
    finally:
        close_db_connection(conn)


def parked(url):
    return query(url, "SELECT source_table, source_id, column_name, resolved_batch_id IS NULL "
                      "FROM etl_rejected_rows ORDER BY 1, 2")


@pytest.mark.parametrize("setwise", [True, False], ids=["set-wise", "row-by-row"])
def test_a_dangling_reference_found_by_the_keys_is_parked_and_the_rest_appended(
        s3, buckets, pipeline_env, warehouse_url, monkeypatch, caplog, setwise):
    """Plain keys (validated, checked at once): the append goes first and the keys find the dangling
    row; the append is undone, the row parked, the rest appended; the keys are as they were. Keys
    suspended: the batch looks for dangling rows before the append; the same result."""
    pipeline_env(warehouse_url=warehouse_url)
    if setwise:
        monkeypatch.setattr(constraints, "SETWISE_MIN_ROWS", 1)
        monkeypatch.setattr(constraints, "SETWISE_MIN_FRACTION", 0)
    batch = base_batch()
    batch["sales_order"].append(sales_order(3, design_id=99))
    result = run_pipeline(s3, buckets, batch)
    before = definitions(warehouse_url)
    assert result["tables"]["fact_sales_order"] == 2 and result["rejected_rows"] == 1
    assert parked(warehouse_url) == [["sales_order", 3, "design_id", True]]
    assert query(warehouse_url, "SELECT sales_order_id FROM fact_sales_order ORDER BY 1") == [[1], [2]]
    assert [r.getMessage() for r in caplog.records].count(
        "dangling references: parking them before the append") == (0 if setwise else 1)
    assert definitions(warehouse_url) == before


def test_keys_checked_late_or_not_at_all_are_never_trusted_to_find_dangling_rows(
        s3, buckets, warehouse, monkeypatch):
    """fact_sales_order's design key is INITIALLY DEFERRED (row by row it would only object at COMMIT,
    failing the batch) and fact_payment's transaction key NOT VALID (re-created set-wise it would not
    check the appended rows): for those tables the dangling rows are looked for before the append."""
    monkeypatch.setattr(constraints, "SETWISE_MIN_FRACTION", 0)
    monkeypatch.setattr(constraints, "SETWISE_MIN_ROWS", 4)  # the 4 payments set-wise, 3 orders row by row
    batch = base_batch()
    batch["sales_order"].append(sales_order(3, design_id=99))
    batch["payment"].append(payment(4, 99))
    result = run_pipeline(s3, buckets, batch)
    assert result["rejected_rows"] == 2
    assert parked(warehouse) == [["payment", 4, "transaction_id", True],
                                 ["sales_order", 3, "design_id", True]]
    assert query(warehouse, "SELECT count(*) FROM fact_payment")[0][0] == 3
    assert query(warehouse, "SELECT count(*) FROM fact_sales_order")[0][0] == 2


def test_a_dangling_reference_the_batch_missed_is_found_by_validate_and_named(
        s3, buckets, warehouse, always_setwise, monkeypatch):
    """The batches park dangling facts before appending; with that first line of defence removed, the
    set-wise VALIDATE at the end is the second: the run fails naming the key, which is left NOT VALID
    (so later batches park dangling rows first), and nothing is left suspended. The dangling reference is
    the sales staff: the dashboard's rollups join the design's name and refuse a fact without one inside
    the batch (a third line), so a dangling design would never reach VALIDATE."""
    real_ensure = load_run.ensure_warehouse_schema

    def without_anti_join(conn):
        targets = real_ensure(conn)
        for target in targets.values():
            target.references = []
        return targets
    monkeypatch.setattr(load_run, "ensure_warehouse_schema", without_anti_join)
    batch = base_batch()
    batch["sales_order"].append(sales_order(3, staff_id=99))
    violated = "fact_sales_order: foreign key fact_sales_order_sales_staff_id_fkey violated"
    with pytest.raises(ForeignKeyViolationError, match=violated) as err:
        run_pipeline(s3, buckets, batch)
    assert (err.value.table, err.value.constraint) == ("fact_sales_order",
                                                       "fact_sales_order_sales_staff_id_fkey")
    assert "sales_staff_id)=(99)" in str(err.value)
    assert validated(warehouse)["fact_sales_order_sales_staff_id_fkey"] is False
    assert validated(warehouse)["fact_sales_order_design_id_fkey"] is True
    assert suspended(warehouse) == []
    assert not constraints.checked_at_once(_connection(warehouse), "fact_sales_order")


def _connection(url):
    return connect_to_db(credentials_from_url(url))


def test_a_load_user_who_does_not_own_the_facts_falls_back_to_row_by_row(
        s3, buckets, warehouse, always_setwise, monkeypatch, caplog):
    owner = credentials_from_url(warehouse)
    loader_url = f"postgresql://etl_loader:not-the-owner@{owner['host']}:{owner['port']}/{owner['database']}"
    query(warehouse, "CREATE ROLE etl_loader LOGIN PASSWORD 'not-the-owner'")
    try:
        query(warehouse, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO etl_loader")
        query(warehouse, "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO etl_loader")
        put_credentials_secret("test/warehouse-loader", loader_url)
        monkeypatch.setenv("WAREHOUSE_SECRET_ID", "test/warehouse-loader")
        before = oids(warehouse)
        result = run_pipeline(s3, buckets, base_batch())
    finally:
        query(warehouse, "DROP OWNED BY etl_loader")
        query(warehouse, "DROP ROLE etl_loader")
    assert result["tables"]["fact_sales_order"] == 2
    assert oids(warehouse) == before
    fallbacks = messages(caplog, "foreign keys checked row by row")
    assert len(fallbacks) == len(FACT_TABLES) and all(r.levelname == "INFO" for r in fallbacks)


# -- readers (issue 19): no load waits unboundedly on one, none is blocked for long --------------------

@pytest.fixture
def reader(warehouse):
    """Factory: a separate session on the warehouse (an analyst), closed at the end."""
    sessions = []

    def open_session():
        conn = _connection(warehouse)
        sessions.append(conn)
        return conn
    yield open_session
    for conn in sessions:
        close_db_connection(conn)


def in_thread(body):
    """Run ``body`` in a thread; return (thread, outcome dict filled with "result" or "error")."""
    outcome = {}

    def target():
        try:
            outcome["result"] = body()
        except Exception as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_an_idle_in_transaction_reader_makes_the_load_fall_back_to_row_by_row_not_wait(
        s3, buckets, warehouse, always_setwise, reader, monkeypatch, caplog):
    """An analyst idle in a transaction holds ACCESS SHARE on dim_staff: suspending the keys (ACCESS
    EXCLUSIVE) is not granted in time, so the load keeps the keys, checks row by row, finishes, and says
    what it waited for. (Before: the load waited until statement_timeout, and every reader behind it.)"""
    monkeypatch.setattr(constraints, "EXCLUSIVE_RETRY_SECONDS", 0.05)
    analyst = reader()
    analyst.run("START TRANSACTION")
    analyst.run("SELECT count(*) FROM dim_staff")
    analyst_pid = analyst.run("SELECT pg_backend_pid()")[0][0]
    before, definitions_before = oids(warehouse), definitions(warehouse)
    thread, outcome = in_thread(lambda: run_pipeline(s3, buckets, base_batch()))
    thread.join(120)
    finished = not thread.is_alive()
    analyst.run("ROLLBACK")  # lets a blocked load go on, whatever happened
    thread.join(120)
    assert finished, "the load waited on the idle reader"
    assert outcome["result"]["tables"]["fact_sales_order"] == 2
    kept = {key: oid for key, oid in before.items() if key[0] != "fact_payment"}
    assert {key: oid for key, oid in oids(warehouse).items() if key[0] != "fact_payment"} == kept
    waited = messages(caplog, "foreign keys checked row by row: waited")
    assert {r.table for r in waited} == {"fact_sales_order", "fact_purchase_order"}  # both use dim_staff
    assert all(r.levelname == "WARNING" and f"pid {analyst_pid} (idle in transaction" in r.getMessage()
               and "AccessShareLock on dim_staff" in r.getMessage() for r in waited)
    # fact_payment references no table the analyst reads: its keys were suspended and restored
    suspensions = messages(caplog, "foreign keys suspended for this execution")
    assert [r.table for r in suspensions] == ["fact_payment"]
    assert definitions(warehouse) == definitions_before


def test_readers_keep_reading_while_a_large_load_suspends_and_restores_the_keys(
        s3, buckets, warehouse, always_setwise, reader):
    """A stream of readers of the fact and dimension tables during a load that suspends and restores
    the keys: none of them is refused by a lock_timeout of 3 s (a generous bound: the old design held
    ACCESS EXCLUSIVE for the whole batch, and unboundedly behind an idle reader). Their waits are
    measured in bench/reader_bench.py."""
    stop, errors, reads = threading.Event(), [], []

    def read():
        conn = reader()
        conn.run("SET lock_timeout = '3s'")
        while not stop.is_set():
            try:
                for table in ("dim_staff", "dim_transaction", "fact_payment", "fact_sales_order"):
                    conn.run(f"SELECT count(*) FROM {table}")  # nosec B608
                reads.append(1)
            except Exception as err:  # noqa: BLE001 - collected for the assertion
                errors.append(err)
                return
    readers = [threading.Thread(target=read, daemon=True) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        result = run_pipeline(s3, buckets, base_batch())
    finally:
        stop.set()
        for thread in readers:
            thread.join(30)
    assert result["tables"]["fact_sales_order"] == 2
    assert errors == [] and reads


def test_a_batch_waits_boundedly_on_a_row_a_reader_locked_and_names_it(
        s3, buckets, warehouse, reader, monkeypatch):
    """A reader idle after ``SELECT ... FOR UPDATE`` of a staff row the batch updates: the batch's lock
    wait ends after LOCK_TIMEOUT_MS, the batch rolls back with an error naming the session, and the
    next run loads it exactly once."""
    monkeypatch.setattr(locks, "LOCK_TIMEOUT_MS", 300)
    run_pipeline(s3, buckets, base_batch())
    analyst = reader()
    analyst.run("START TRANSACTION")
    analyst.run("SELECT * FROM dim_staff WHERE staff_id = 1 FOR UPDATE")
    analyst_pid = analyst.run("SELECT pg_backend_pid()")[0][0]
    changed = {"staff": [staff(1, 1, at=later(4), last_name="New")]}
    write_ingest_batch(s3, buckets["ingest"], later(5), changed)
    thread, outcome = in_thread(lambda: load.lambda_handler(transform.lambda_handler({}, None), None))
    thread.join(120)
    finished = not thread.is_alive()
    analyst.run("ROLLBACK")
    thread.join(120)
    assert finished, "the batch waited on the reader's row lock"
    assert isinstance(outcome.get("error"), ConcurrentRunError)
    assert f"pid {analyst_pid} (idle in transaction" in str(outcome["error"])
    assert query(warehouse, "SELECT count(*) FROM etl_load_ledger")[0][0] == 1
    result = load.lambda_handler({}, None)
    assert result["tables"] == {"dim_staff": 1}
    assert query(warehouse, "SELECT last_name FROM dim_staff WHERE staff_id = 1") == [["New"]]


def test_a_fact_table_without_keys_has_nothing_to_suspend(s3, buckets, warehouse, always_setwise, caplog):
    keys = [row[1] for row in definitions(warehouse) if row[0] == "fact_purchase_order"]
    for name in keys:
        query(warehouse, f'ALTER TABLE fact_purchase_order DROP CONSTRAINT "{name}"')
    result = run_pipeline(s3, buckets, base_batch())
    assert result["tables"]["fact_purchase_order"] == 1
    suspensions = messages(caplog, "foreign keys suspended")
    assert {r.table for r in suspensions} == {"fact_sales_order", "fact_payment"}
    assert not messages(caplog, "foreign keys checked row by row")
    assert [row for row in definitions(warehouse) if row[0] == "fact_purchase_order"] == []


def test_a_parked_row_staged_with_a_batch_whose_references_are_all_held_is_checked_itself(
        s3, buckets, warehouse, always_setwise):
    """While the keys are suspended, a reference column whose distinct values in the batch the dimension
    all holds skips its anti-join (``merge._all_held``), but only when the stage holds the batch's rows
    alone: a parked row retried with them (design 99 still missing) is parked again, never appended."""
    batch = base_batch()
    batch["sales_order"].append(sales_order(3, design_id=99))
    assert run_pipeline(s3, buckets, batch)["rejected_rows"] == 1
    write_ingest_batch(s3, buckets["ingest"], later(30), {"sales_order": [sales_order(4, at=later(20))]})
    result = load.lambda_handler(transform.lambda_handler({}, None), None)
    assert result["tables"]["fact_sales_order"] == 1
    assert query(warehouse, "SELECT sales_order_id FROM fact_sales_order ORDER BY 1") == [[1], [2], [4]]
    assert parked(warehouse) == [["sales_order", 3, "design_id", True]]
    assert suspended(warehouse) == []


def test_all_held_shows_a_column_clean_only_when_every_distinct_value_is_held(
        s3, buckets, warehouse, monkeypatch):
    """``merge._all_held``: True only for a column without NULL, of integers or dates, with few enough
    distinct values, each held by the dimension; anything else is left to the anti-join."""
    run_pipeline(s3, buckets, base_batch())
    conn = _connection(warehouse)
    try:
        assert merge._all_held(conn, pa.chunked_array([[1, 2, 2], [1]]), "dim_currency", "currency_id")
        assert not merge._all_held(conn, pa.array([1, 99]), "dim_currency", "currency_id")
        assert not merge._all_held(conn, pa.array([1, None]), "dim_currency", "currency_id")
        assert merge._all_held(conn, pa.array([date(2024, 11, 25)]), "dim_date", "date_id")
        assert not merge._all_held(conn, pa.array([date(1900, 1, 1)]), "dim_date", "date_id")
        assert not merge._all_held(conn, pa.array(["1"]), "dim_currency", "currency_id")
        assert merge._all_held(conn, pa.array([], pa.int32()), "dim_currency", "currency_id")
        monkeypatch.setattr(merge, "PROBE_MAX_DISTINCT", 1)
        assert not merge._all_held(conn, pa.array([1, 2]), "dim_currency", "currency_id")
    finally:
        close_db_connection(conn)


def test_dangling_references_in_a_gap_of_the_staged_range_are_parked_and_load_when_they_arrive(
        s3, buckets, warehouse, always_setwise):
    """The anti-join reads the dimension's rows between the least and the greatest staged reference only
    (``merge._within_staged``, issue 24): a reference in a gap of that range (payment type 2 between 1 and 3)
    or above it (design 99) is parked; retried with a batch whose own references lie elsewhere, each loads
    once its dimension row arrives."""
    batch = base_batch()
    batch["payment"].append(payment(4, 1, payment_type_id=2))
    batch["sales_order"].append(sales_order(3, design_id=99))
    assert run_pipeline(s3, buckets, batch)["rejected_rows"] == 2
    assert parked(warehouse) == [["payment", 4, "payment_type_id", True],
                                 ["sales_order", 3, "design_id", True]]
    at = later(20)
    write_ingest_batch(s3, buckets["ingest"], later(30), {
        "payment_type": [{"payment_type_id": 2, "payment_type_name": "SALES_REFUND", **stamps(at)}],
        "design": [{"design_id": 99, **stamps(at), "design_name": "Late", "file_location": "/usr",
                    "file_name": "late.json"}],
        "payment": [payment(5, 2, at=at)], "sales_order": [sales_order(4, at=at)]})
    result = load.lambda_handler(transform.lambda_handler({}, None), None)
    assert result["rejected_rows"] == 0
    assert query(warehouse, "SELECT payment_id FROM fact_payment ORDER BY 1") == [[1], [2], [3], [4], [5]]
    assert query(warehouse, "SELECT sales_order_id FROM fact_sales_order ORDER BY 1") == [[1], [2], [3], [4]]
    assert parked(warehouse) == [["payment", 4, "payment_type_id", False],
                                 ["sales_order", 3, "design_id", False]]
    assert suspended(warehouse) == []


@pytest.mark.parametrize("second", ["connects", "cannot connect", "fails"])
def test_the_keys_are_validated_on_two_connections_one_table_on_one(
        s3, buckets, warehouse, always_setwise, monkeypatch, caplog, second):
    """Restoring validates the fact tables' keys on two connections at once, each table's keys on one of
    them; without a second connection every key is validated on the first; an error on the second is
    raised once both are done, and what it did not validate stays recorded for the next run."""
    before_valid = validated(warehouse)
    _leave_keys_to_validate(s3, buckets, monkeypatch)
    assert {row[0] for row in suspended(warehouse)} == set(FACT_TABLES)
    used = []
    real_validate = constraints._validate

    def recording(conn, table, name, violations):
        used.append((id(conn), table))
        if second == "fails" and conn is not main:
            raise RuntimeError("second connection lost")
        return real_validate(conn, table, name, violations)
    monkeypatch.setattr(constraints, "_validate", recording)

    def connect():
        if second == "cannot connect":
            raise OSError("too many connections")
        return connect_to_db(credentials_from_url(warehouse))
    main = connect_to_db(credentials_from_url(warehouse))
    try:
        if second == "fails":
            with pytest.raises(RuntimeError, match="second connection lost"):
                constraints.restore_foreign_keys(main, connect)
            assert suspended(warehouse)
            assert {table for conn, table in used if conn == id(main)} < set(FACT_TABLES)
            return
        # every key but the one NOT VALID before (re-added NOT VALID, not validated)
        assert constraints.restore_foreign_keys(main, connect) == sum(before_valid.values())
    finally:
        close_db_connection(main)
    assert validated(warehouse) == before_valid and suspended(warehouse) == []
    tables_on = {}
    for conn, table in used:
        tables_on.setdefault(conn, set()).add(table)
    assert set().union(*tables_on.values()) == set(FACT_TABLES)
    if second == "connects":
        assert len(tables_on) == 2 and not set.intersection(*tables_on.values())
    else:
        assert list(tables_on) == [id(main)]
        assert messages(caplog, "validating every key on one connection")
