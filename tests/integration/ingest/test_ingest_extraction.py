"""The extraction internals: COPY -> CSV chunks -> Parquet row groups, the threaded pipeline, and
the xid arithmetic."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest

import ingest
from utils.ingest import run as ingest_run
from utils.errors import CorruptFileError, SourceDataError
from utils.ingest.sink import MAX_QUEUED_CHUNKS, ParquetSink, record_boundary
from utils.ingest.snapshot import copy_sql, full_xid_sql, snapshot_bounds
from utils.aws.state import read_state
from utils.catalog.source import SOURCE_SCHEMAS, SOURCE_TABLES
from tests.support.db import connect
from tests.support.ingest import assert_each_version_landed_once
from tests.support.totesys import FILL_SQL, SCHEMA_SQL
from utils.aws.objects import list_keys
from tests.support.db import run_sql


@pytest.fixture
def big_address(new_database):
    """An address table of 3,000 rows, each with quotes, newlines and NULL-vs-'' fields."""
    url = new_database()
    run_sql(url, SCHEMA_SQL)
    run_sql(url, FILL_SQL)
    run_sql(url, """INSERT INTO address (address_line_1, address_line_2, district, city, postal_code, country,
                                         phone, last_updated)
                    SELECT 'Flat "' || n || '"' || chr(10) || 'line, two', CASE WHEN n % 2 = 0 THEN NULL
                           ELSE '' END, repeat('d', n % 50), 'City', 'PC', 'UK', '0', now()
                    FROM generate_series(1, 3000) AS n""")
    return url


def _extract(url, chunk_bytes):
    conn = connect(url)
    try:
        conn.run("BEGIN")
        conn.run("SELECT set_config('totesys.high', '9999-01-01 00:00:00', true)")
        sink = ParquetSink(SOURCE_SCHEMAS["address"], chunk_bytes=chunk_bytes)
        conn.run(copy_sql("address", incremental=False), stream=sink)
        conn.run("ROLLBACK")
        return sink.close()
    finally:
        conn.close()


def test_small_chunks_give_many_row_groups_and_the_same_rows(big_address):
    body, rows = _extract(big_address, chunk_bytes=16 * 1024)
    whole, whole_rows = _extract(big_address, chunk_bytes=1 << 30)
    assert rows == whole_rows == 3002
    chunked = pq.ParquetFile(body)
    assert chunked.metadata.num_row_groups > 10
    assert pq.ParquetFile(whole).metadata.num_row_groups == 1
    table = chunked.read()
    assert table.equals(pq.read_table(whole))
    assert table.schema.equals(SOURCE_SCHEMAS["address"])
    row = table.slice(3, 1).to_pylist()[0]  # address_id 4 = generated n = 2
    assert row["address_line_1"] == 'Flat "2"\nline, two' and row["address_line_2"] is None
    assert table.slice(4, 1).to_pylist()[0]["address_line_2"] == ""


def test_an_empty_result_gives_no_file():
    assert ParquetSink(SOURCE_SCHEMAS["currency"]).close() == (None, 0)


@pytest.mark.parametrize("data, cut", [
    (b'1,"a\nb"\n2,"c', 8),          # newline inside quotes is not a boundary
    (b'1,"say ""hi""\n"\n2,x\n', 20),  # doubled quotes keep the parity
    (b'1,"open\n', 0),
    (b"", 0),
    (b"1,a\n2,b", 4),
])
def test_record_boundary(data, cut):
    assert record_boundary(bytearray(data)) == cut


def test_snapshot_bounds():
    assert snapshot_bounds("726:729:726,727") == (726, 729)
    assert snapshot_bounds("4294967396:4294967400:") == (4294967396, 4294967400)
    with pytest.raises(CorruptFileError, match="malformed snapshot 'rubbish'"):
        snapshot_bounds("rubbish")
    with pytest.raises(CorruptFileError, match="malformed snapshot None"):
        snapshot_bounds(None)


@pytest.mark.parametrize("cur_xmax, raw, expected", [
    (1000, 999, 999),                                   # epoch 0
    (1000, 3, 3),                                       # frozen/bootstrap xids stay small
    ((1 << 32) + 100, 50, (1 << 32) + 50),              # epoch 1, same epoch
    ((1 << 32) + 100, 4294967000, 4294967000),          # epoch 1, written before the wrap
    ((3 << 32) + 5, 4294967295, (2 << 32) + 4294967295),  # last xid of epoch 2
    ((3 << 32) + 5, 5, (3 << 32) + 5),
])
def test_full_xid_uses_the_epoch_of_the_current_snapshot(pg_admin_url, cur_xmax, raw, expected):
    conn = connect(pg_admin_url)
    try:
        conn.run("BEGIN")
        conn.run("SELECT set_config('totesys.xid_base', :b, true), set_config('totesys.cur_xmax', :c, true)",
                 b=str(cur_xmax >> 32 << 32), c=str(cur_xmax))
        got = conn.run(f"SELECT {full_xid_sql('CAST(:raw AS bigint)')}", raw=raw)[0][0]
        # And it is a valid xid8 that pg_visible_in_snapshot accepts.
        conn.run(f"SELECT pg_visible_in_snapshot(({full_xid_sql('CAST(:raw AS bigint)')})::text::xid8, "
                 "pg_current_snapshot())", raw=raw)
        conn.run("ROLLBACK")
    finally:
        conn.close()
    assert got == expected


def test_real_xmin_maps_to_the_current_full_xid(new_database):
    url = new_database()
    run_sql(url, "CREATE TABLE t (x int)")
    conn = connect(url)
    try:
        conn.run("BEGIN")
        conn.run("INSERT INTO t VALUES (1)")
        mine = int(conn.run("SELECT pg_current_xact_id()::text")[0][0])
        conn.run("COMMIT")
        conn.run("BEGIN")
        cur = int(conn.run("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")[0][0])
        conn.run("SELECT set_config('totesys.xid_base', :b, true), set_config('totesys.cur_xmax', :c, true)",
                 b=str(cur >> 32 << 32), c=str(cur))
        assert conn.run(f"SELECT {full_xid_sql('xmin::text::bigint')} FROM t")[0][0] == mine
        conn.run("ROLLBACK")
    finally:
        conn.close()


def test_copy_sql_only_names_allow_listed_identifiers():
    from utils.errors import UnknownTableError
    with pytest.raises(UnknownTableError):
        copy_sql('staff"; DROP TABLE staff; --', incremental=True)
    sql = copy_sql("transaction", incremental=True)
    assert 'FROM "transaction"' in sql and "current_setting('totesys.prev_xmin')" in sql
    assert sql.startswith("COPY (SELECT") and sql.endswith("TO STDOUT WITH (FORMAT csv, HEADER false)")


def test_block_reader_matches_pg8000_and_keeps_errors_and_the_connection(pg_admin_url):
    import pg8000.exceptions

    from utils.ingest.copy_reader import copy_out

    class Collect:
        def __init__(self):
            self.parts = []

        def write(self, data):
            self.parts.append(bytes(data))

    sql = ("COPY (SELECT n, repeat('x', n % 3000), CASE WHEN n % 7 = 0 THEN NULL ELSE '' END "
           "FROM generate_series(1, 20000) AS n) TO STDOUT WITH (FORMAT csv)")
    conn = connect(pg_admin_url)
    try:
        fast, plain = Collect(), Collect()
        copy_out(conn, sql, fast)
        conn.run(sql, stream=plain)
        assert b"".join(fast.parts) == b"".join(plain.parts)
        assert len(fast.parts) < len(plain.parts) == 20000  # rows arrive in blocks
        with pytest.raises(pg8000.exceptions.DatabaseError, match="division by zero"):
            copy_out(conn, "COPY (SELECT 1 / (n - 5000) FROM generate_series(1, 9000) AS n) TO STDOUT",
                     Collect())
        assert conn.run("SELECT 42") == [[42]]
        assert "handle_messages" not in vars(conn)
    finally:
        conn.close()


# -- the threaded pipeline ------------------------------------------------------------------------


class _Deferred:
    """A future that runs its job only when asked for the result (or by ``run_all``)."""

    def __init__(self, fn, args):
        self._fn, self._args, self._done, self._value = fn, args, False, None

    def done(self):
        return self._done

    def result(self):
        if not self._done:
            self._value, self._done = self._fn(*self._args), True
        return self._value


class _DeferredExecutor:
    """Records what a sink queued and how much of it was still waiting at each submit."""

    def __init__(self):
        self.jobs, self.waiting_at_submit = [], []

    def submit(self, fn, *args):
        self.waiting_at_submit.append(sum(not job.done() for job in self.jobs))
        self.jobs.append(_Deferred(fn, args))
        return self.jobs[-1]


def _address_csv(url):
    class Collect:
        parts = []

        def write(self, data):
            self.parts.append(bytes(data))

    conn = connect(url)
    try:
        conn.run("BEGIN")
        conn.run("SELECT set_config('totesys.high', '9999-01-01 00:00:00', true)")
        sink = Collect()
        conn.run(copy_sql("address", incremental=False), stream=sink)
        conn.run("ROLLBACK")
        return sink.parts
    finally:
        conn.close()


def test_a_sink_on_a_converter_thread_writes_the_same_file_in_the_same_order(big_address):
    rows = _address_csv(big_address)
    inline = ParquetSink(SOURCE_SCHEMAS["address"], chunk_bytes=16 * 1024)
    with ThreadPoolExecutor(max_workers=1) as convert:
        threaded = ParquetSink(SOURCE_SCHEMAS["address"], chunk_bytes=16 * 1024, executor=convert)
        for row in rows:
            inline.write(row)
            threaded.write(row)
        body, count = threaded.close_async().result()
    expected, expected_count = inline.close()
    assert count == expected_count == 3002
    assert body.getvalue() == expected.getvalue()
    assert pq.ParquetFile(body).metadata.num_row_groups > 10
    # Row groups in arrival order: the ids come out in the order COPY sent the rows (one per write).
    assert pq.read_table(body)["address_id"].to_pylist() == [int(row.split(b",", 1)[0]) for row in rows]


def test_a_sink_keeps_at_most_the_allowed_chunks_waiting(big_address):
    executor = _DeferredExecutor()
    sink = ParquetSink(SOURCE_SCHEMAS["address"], chunk_bytes=16 * 1024, executor=executor)
    for row in _address_csv(big_address):
        sink.write(row)
    finished = sink.close_async()
    assert len(executor.jobs) > 10
    # Before each chunk is queued at most MAX_QUEUED_CHUNKS wait (one converting, one queued); the
    # last job queued is the close, which only waits for them.
    assert max(executor.waiting_at_submit[:-1]) == MAX_QUEUED_CHUNKS
    body, rows = finished.result()
    assert rows == 3002 and pq.read_table(body).num_rows == 3002


@pytest.mark.parametrize("threaded", [False, True])
def test_a_conversion_error_reaches_the_caller(threaded):
    bad = b"1,GBP,not-a-time,2024-01-01 00:00:00\n"
    with ThreadPoolExecutor(max_workers=1) as convert:
        sink = ParquetSink(SOURCE_SCHEMAS["currency"], chunk_bytes=8, executor=convert if threaded else None,
                           table="currency")
        with pytest.raises(SourceDataError,
                           match="totesys.currency.created_at in the row currency_id = 1: ") as caught:
            sink.write(bad)
            sink.write(bad)  # the threaded sink reports the first chunk's error here or at close
            sink.close()
    error = caught.value
    assert (error.table, error.column, error.row_id) == ("currency", "created_at", 1)
    assert "not-a-time" not in str(error)


def test_a_failed_conversion_in_the_pipeline_writes_no_manifest_and_keeps_the_state(env, monkeypatch):
    s3, bucket, _ = env
    real_flush = ParquetSink._flush

    def fail_for_payment(self, chunk):
        if self.table == "payment":
            raise OSError("injected: converter thread failed")
        return real_flush(self, chunk)

    monkeypatch.setattr(ParquetSink, "_flush", fail_for_payment)
    with pytest.raises(OSError, match="injected: converter thread failed"):
        ingest.lambda_handler({}, None)
    assert read_state(s3, bucket, "ingest") == ({}, None)
    assert not [key for key in list_keys(s3, bucket) if key.startswith(("_batches/", "payment/"))]
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("ingest-")]
    monkeypatch.setattr(ParquetSink, "_flush", real_flush)
    assert sorted(ingest.lambda_handler({}, None)) == sorted(SOURCE_TABLES)
    assert_each_version_landed_once(s3, bucket, env[2])


def test_an_upload_error_while_later_tables_are_read_is_raised_before_the_manifest(env, monkeypatch):
    s3, bucket, url = env
    real_write = ingest_run.write_to_s3

    def fail_first(s3_client, bucket_name, key, data, **kwargs):
        if key.startswith("address/"):
            raise OSError("injected: upload failed")
        return real_write(s3_client, bucket_name, key, data, **kwargs)

    monkeypatch.setattr(ingest_run, "write_to_s3", fail_first)
    with pytest.raises(OSError, match="injected: upload failed"):
        ingest.lambda_handler({}, None)
    assert read_state(s3, bucket, "ingest") == ({}, None)
    assert not [key for key in list_keys(s3, bucket) if key.startswith("_batches/")]
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("ingest-")]
