"""Hard deletes in totesys (issue 12) on scale-1 data, end to end against real PostgreSQL and moto S3:
detected from primary-key sets, recorded once in etl_deleted_rows, gone from the current views, kept in
the fact history; re-inserts come back; a crash between detection and load re-detects, records once."""
import boto3
import pytest

import ingest
import load
import transform
from tests.support.contracts import contract_problems
from tests.support.db import run_sql as query
from utils.aws.objects import read_json
from utils.aws.state import read_state
from utils.contracts import IngestManifest, IngestState, ProcessedManifest
from utils.errors import CorruptFileError

pytestmark = pytest.mark.slow

CURRENT = {"sales_order": "current_sales_order", "purchase_order": "current_purchase_order",
           "payment": "current_payment"}


def run_pipeline():
    files = ingest.lambda_handler({}, None)
    transformed = transform.lambda_handler(files, None)
    return files, transformed, load.lambda_handler(transformed, None)


def ids(url, sql, **params):
    return sorted(row[0] for row in query(url, sql, **params))


def deleted_rows(warehouse):
    return sorted(tuple(row) for row in query(
        warehouse, "SELECT source_table, source_id, batch_id, reinserted_batch_id FROM etl_deleted_rows"))


def assert_current_equals_source(source, warehouse):
    """Each current view holds exactly the source's ids, at the source's latest version."""
    for table, view in CURRENT.items():
        source_rows = sorted(tuple(row) for row in query(
            source, f"SELECT {table}_id, last_updated::date, last_updated::time FROM {table}"))
        current = sorted(tuple(row) for row in query(
            warehouse, f"SELECT {table}_id, last_updated_date, last_updated_time FROM {view}"))
        assert current == source_rows, view


@pytest.fixture
def loaded(totesys_url, warehouse_url, pipeline_env):
    """Scale-1 totesys loaded once into the warehouse; returns (source, warehouse)."""
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()
    return totesys_url, warehouse_url


def test_deleted_payments_leave_current_payment_keep_history_and_are_recorded_once(loaded, buckets):
    source, warehouse = loaded
    gone = ids(source, "SELECT payment_id FROM payment ORDER BY payment_id LIMIT 3")
    history = query(warehouse, "SELECT count(*) FROM fact_payment")[0][0]
    query(source, "DELETE FROM payment WHERE payment_id = ANY(CAST(:ids AS int[]))", ids=gone)

    files, transformed, loaded_result = run_pipeline()

    # A run with only deletes still makes a batch, and the ingest manifest names the deleted keys.
    assert files == {} and len(loaded_result["batches"]) == 1
    batch_id = loaded_result["batches"][0]
    assert loaded_result["deleted_rows"] == 3 and loaded_result["deleted"] == {"payment": 3}
    s3 = boto3.client("s3")
    state, _ = read_state(s3, buckets["ingest"], "ingest")
    manifest = read_json(s3, buckets["ingest"], state["manifest_key"])
    assert manifest["tables"] == {} and manifest["deleted"]["tables"] == {"payment": 3}
    assert all(entry["keys"].startswith(f"_keys/{table}/") for table, entry in state["tables"].items())
    # What was written is exactly what utils.contracts declares (the deleted entry and key sets too).
    processed_state, _ = read_state(s3, buckets["processed"], "transform")
    processed = read_json(s3, buckets["processed"], processed_state["manifest_key"])
    assert processed["deleted"]["tables"] == {"payment": 3}
    assert contract_problems(IngestState, state) == []
    assert contract_problems(IngestManifest, manifest) == []
    assert contract_problems(ProcessedManifest, processed) == []
    assert contract_problems(IngestState, dict(state, stray=1)) == ["stray: not declared in IngestState"]
    assert deleted_rows(warehouse) == [("payment", i, batch_id, None) for i in gone]
    assert query(warehouse, "SELECT count(*) FROM fact_payment")[0][0] == history  # history intact
    assert ids(warehouse, "SELECT payment_id FROM fact_payment WHERE payment_id = ANY(CAST(:i AS int[]))",
               i=gone) == gone
    assert_current_equals_source(source, warehouse)
    detected = query(warehouse, "SELECT bool_and(detected_at <= now()) FROM etl_deleted_rows")[0][0]
    assert detected is True

    # Nothing changed: no batch, nothing recorded again. A replay of the batch (ledger row removed)
    # records nothing twice.
    assert run_pipeline()[2]["batches"] == []
    query(warehouse, "DELETE FROM etl_load_ledger WHERE batch_id = :b", b=batch_id)
    replayed = load.lambda_handler({}, None)
    assert replayed["batches"] == [batch_id] and "deleted_rows" not in replayed
    assert deleted_rows(warehouse) == [("payment", i, batch_id, None) for i in gone]


def test_a_purchase_order_deleted_with_its_transaction_and_payment(loaded):
    source, warehouse = loaded
    order, transaction, payment = query(
        source, "SELECT p.purchase_order_id, t.transaction_id, y.payment_id FROM purchase_order p "
                "JOIN transaction t USING (purchase_order_id) JOIN payment y USING (transaction_id) "
                "ORDER BY 1 LIMIT 1")[0]
    query(source, "DELETE FROM payment WHERE payment_id = :i", i=payment)
    query(source, "DELETE FROM transaction WHERE transaction_id = :i", i=transaction)
    query(source, "DELETE FROM purchase_order WHERE purchase_order_id = :i", i=order)

    result = run_pipeline()[2]

    batch_id = result["batches"][0]
    assert result["deleted"] == {"payment": 1, "transaction": 1, "purchase_order": 1}
    assert deleted_rows(warehouse) == sorted([("payment", payment, batch_id, None),
                                              ("transaction", transaction, batch_id, None),
                                              ("purchase_order", order, batch_id, None)])
    assert_current_equals_source(source, warehouse)
    assert query(warehouse, "SELECT count(*) FROM fact_purchase_order WHERE purchase_order_id = :i",
                 i=order)[0][0] == 1
    # The dimension row stays (fact_payment's history references it) and is listed as gone.
    assert ids(warehouse, "SELECT transaction_id FROM dim_transaction WHERE transaction_id = :i",
               i=transaction) == [transaction]
    assert query(warehouse, "SELECT dimension, dimension_id FROM deleted_dimension_rows") \
        == [["dim_transaction", transaction]]


def test_a_deleted_design_that_facts_still_reference_stays_and_is_listed(loaded):
    source, warehouse = loaded
    # totesys' foreign key would refuse the delete; some sources have none (or delete in bulk).
    constraint = query(source, "SELECT conname::text FROM pg_constraint WHERE contype = 'f' AND "
                               "conrelid = 'sales_order'::regclass AND confrelid = 'design'::regclass")[0][0]
    query(source, f'ALTER TABLE sales_order DROP CONSTRAINT "{constraint}"')
    design = query(source, "SELECT design_id FROM sales_order GROUP BY 1 "
                           "ORDER BY count(*) DESC, 1 LIMIT 1")[0][0]
    query(source, "DELETE FROM design WHERE design_id = :i", i=design)

    result = run_pipeline()[2]

    assert result["deleted"] == {"design": 1}
    assert ids(warehouse, "SELECT design_id FROM dim_design WHERE design_id = :i", i=design) == [design]
    referencing = query(warehouse, "SELECT count(*) FROM current_sales_order WHERE design_id = :i", i=design)
    assert referencing[0][0] > 0  # the orders still exist: they stay current
    assert query(warehouse, "SELECT dimension, dimension_id, batch_id FROM deleted_dimension_rows") \
        == [["dim_design", design, result["batches"][0]]]
    assert_current_equals_source(source, warehouse)


def test_a_deleted_id_inserted_again_shows_again_and_history_keeps_both(loaded):
    source, warehouse = loaded
    columns = ("payment_id, created_at, transaction_id, counterparty_id, payment_amount, currency_id, "
               "payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number")
    payment = query(source, "SELECT min(payment_id) FROM payment")[0][0]
    query(source, "CREATE TABLE kept AS SELECT * FROM payment WHERE payment_id = :i", i=payment)
    query(source, "DELETE FROM payment WHERE payment_id = :i", i=payment)
    deleted_in = run_pipeline()[2]["batches"][0]
    assert ids(warehouse, "SELECT payment_id FROM current_payment WHERE payment_id = :i", i=payment) == []

    query(source, f"INSERT INTO payment ({columns}, last_updated) SELECT {columns}, now() FROM kept")
    result = run_pipeline()[2]

    reinserted_in = result["batches"][0]
    assert "deleted_rows" not in result
    assert deleted_rows(warehouse) == [("payment", payment, deleted_in, reinserted_in)]
    assert query(warehouse, "SELECT count(*) FROM fact_payment WHERE payment_id = :i", i=payment)[0][0] == 2
    assert_current_equals_source(source, warehouse)

    # Deleted a second time: a second record, open again.
    query(source, "DELETE FROM payment WHERE payment_id = :i", i=payment)
    again = run_pipeline()[2]["batches"][0]
    assert deleted_rows(warehouse) == sorted([("payment", payment, deleted_in, reinserted_in),
                                              ("payment", payment, again, None)])
    assert_current_equals_source(source, warehouse)


def test_a_crash_between_detection_and_load_redetects_and_records_once(loaded, buckets, monkeypatch):
    source, warehouse = loaded
    gone = ids(source, "SELECT payment_id FROM payment ORDER BY payment_id DESC LIMIT 2")
    query(source, "DELETE FROM payment WHERE payment_id = ANY(CAST(:ids AS int[]))", ids=gone)
    query(source, "UPDATE sales_order SET units_sold = 5, last_updated = now() WHERE sales_order_id = 1")

    # 1. Ingest dies after writing the key sets, the deleted keys and the manifest, before its state
    #    pointer advances: everything it wrote is an orphan.
    import utils.ingest.cdc.run as cdc_run
    import utils.ingest.run as ingest_run

    def crash(*args, **kwargs):
        raise RuntimeError("killed before the state pointer advanced")
    with monkeypatch.context() as patched, pytest.raises(RuntimeError):
        patched.setattr(ingest_run, "write_ingest_state", crash)
        patched.setattr(cdc_run, "write_ingest_state", crash)  # INGEST_MODE=cdc (make test-cdc)
        ingest.lambda_handler({}, None)
    orphans = boto3.client("s3").list_objects_v2(Bucket=buckets["ingest"], Prefix="_deleted/")["KeyCount"]
    assert orphans == 1

    # 2. The retry detects the same deletes; the load then dies inside its transaction.
    files = ingest.lambda_handler({}, None)
    transformed = transform.lambda_handler(files, None)
    import utils.load.merge as merge

    def crash_load(*args, **kwargs):
        raise RuntimeError("killed before the batch committed")
    with monkeypatch.context() as patched, pytest.raises(RuntimeError):
        patched.setattr(merge, "record_batch", crash_load)
        load.lambda_handler(transformed, None)
    assert deleted_rows(warehouse) == []

    # 3. The retried load records each deletion once, with the order change, in one batch.
    result = load.lambda_handler(transformed, None)
    assert result["deleted"] == {"payment": 2} and result["batches"] == transformed["batches"]
    assert deleted_rows(warehouse) == [("payment", i, result["batches"][0], None) for i in gone]
    assert_current_equals_source(source, warehouse)
    assert query(warehouse, "SELECT count(*) FROM fact_payment WHERE payment_id = ANY(CAST(:i AS int[]))",
                 i=gone)[0][0] >= 2


def test_a_missing_previous_key_set_fails_the_ingest_clearly(loaded, buckets):
    source, _ = loaded
    s3 = boto3.client("s3")
    state, _ = read_state(s3, buckets["ingest"], "ingest")
    key = state["tables"]["payment"]["keys"]
    versions = s3.list_object_versions(Bucket=buckets["ingest"], Prefix=key)["Versions"]
    for version in versions:
        s3.delete_object(Bucket=buckets["ingest"], Key=key, VersionId=version["VersionId"])
    query(source, "DELETE FROM payment WHERE payment_id = (SELECT min(payment_id) FROM payment)")
    with pytest.raises(CorruptFileError, match=f"payment: cannot read .*{key}"):
        ingest.lambda_handler({}, None)
    assert read_state(s3, buckets["ingest"], "ingest")[0] == state  # nothing advanced


def test_a_deleted_entry_without_a_file_key_is_a_clear_error():
    from utils.aws.manifests import read_deleted
    with pytest.raises(CorruptFileError, match="manifest m.json: entry 'deleted' has no file key"):
        read_deleted(None, "bucket", {"deleted": {"rows": 1}}, "m.json")


def test_deleted_keys_of_a_table_outside_the_allow_list_are_refused(buckets):
    import pyarrow as pa

    from utils.aws.objects import parquet_bytes
    from utils.errors import UnknownTableError
    from utils.catalog.formats import DELETED_SCHEMA
    from utils.aws.manifests import read_deleted
    s3 = boto3.client("s3")
    bad = pa.Table.from_pylist([{"source_table": "pg_authid", "source_id": 1}], schema=DELETED_SCHEMA)
    s3.put_object(Bucket=buckets["ingest"], Key="_deleted/x.parquet", Body=parquet_bytes(bad))
    with pytest.raises(UnknownTableError):
        read_deleted(s3, buckets["ingest"], {"deleted": {"key": "_deleted/x.parquet"}}, "m.json")


def test_deleted_rows_leave_the_transform_snapshots():
    import pyarrow as pa

    from utils.catalog.source import LANDING_SCHEMAS
    from utils.catalog.formats import DELETED_SCHEMA
    from utils.transform.deletes import drop_deleted
    staff = LANDING_SCHEMAS["staff"].empty_table()
    staff = pa.Table.from_pylist([{"staff_id": i, "first_name": "a", "last_name": "b", "department_id": 1,
                                   "email_address": "e"} for i in (1, 2, 3)], schema=staff.schema)
    deleted = pa.Table.from_pylist([{"source_table": "staff", "source_id": 2},
                                    {"source_table": "payment", "source_id": 1}], schema=DELETED_SCHEMA)
    kept, changed = drop_deleted({"staff": staff, "address": None}, deleted)
    assert changed == ["staff"] and kept["staff"]["staff_id"].to_pylist() == [1, 3]
    assert drop_deleted({"staff": staff}, DELETED_SCHEMA.empty_table()) == ({"staff": staff}, [])


# -- key sets travel as runs of consecutive keys -----------------------------------------------------

def test_runs_expand_to_every_key_in_order():
    from utils.ingest.deletes import expand_runs
    keys = expand_runs([-3, 1, 5, 9], [-1, 3, 5, 12])
    assert keys.tolist() == [-3, -2, -1, 1, 2, 3, 5, 9, 10, 11, 12]
    assert keys.dtype.name == "int32"
    assert expand_runs([], []).tolist() == []


def test_key_sets_read_as_runs_are_exactly_the_tables_keys(totesys_url):
    """Gaps of every shape (single holes, long holes, a lone key, the ends) and an empty table."""
    from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
    from utils.ingest.deletes import read_keys
    query(totesys_url, "DELETE FROM payment WHERE payment_id % 7 = 0 OR payment_id BETWEEN 100 AND 160 "
                       "OR payment_id = (SELECT min(payment_id) FROM payment) "
                       "OR (payment_id BETWEEN 300 AND 400 AND payment_id <> 351)")
    expected = ids(totesys_url, "SELECT payment_id FROM payment")
    conn = connect_to_db(credentials_from_url(totesys_url))
    try:
        assert read_keys(conn, "payment").tolist() == expected
        assert len(expected) > 1000 and 351 in expected and 352 not in expected
        conn.run("TRUNCATE payment, transaction CASCADE")
        assert read_keys(conn, "payment").tolist() == []
    finally:
        close_db_connection(conn)


def test_a_deleted_department_inserted_again_closes_its_deletion(loaded):
    """Defect 5 (docs/RELIABILITY.md): department has no warehouse table of its own (it is folded into
    dim_staff), so its re-insert reaches the load only through the processed manifest's ``source_ids``;
    its deletion must close as a fact's or a dimension's does."""
    source, warehouse = loaded
    columns = "department_id, department_name, location, manager, created_at"
    department = query(source, "INSERT INTO department (department_name, location, manager, created_at, "
                               "last_updated) VALUES ('Audit', 'Leeds', 'Ann Lee', now(), now()) "
                               "RETURNING department_id")[0][0]
    run_pipeline()
    query(source, f"CREATE TABLE kept AS SELECT {columns} FROM department WHERE department_id = :i",
          i=department)
    query(source, "DELETE FROM department WHERE department_id = :i", i=department)
    deleted_in = run_pipeline()[2]["batches"][0]
    assert deleted_rows(warehouse) == [("department", department, deleted_in, None)]

    query(source, f"INSERT INTO department ({columns}, last_updated) SELECT {columns}, now() FROM kept")
    result = run_pipeline()[2]

    reinserted_in = result["batches"][0]
    assert deleted_rows(warehouse) == [("department", department, deleted_in, reinserted_in)]


def test_a_source_ids_entry_that_is_not_a_list_of_ids_is_a_clear_error():
    from utils.errors import UnknownTableError
    from utils.aws.manifests import read_source_ids
    assert read_source_ids({}, "m.json") == {}
    assert read_source_ids({"source_ids": {"department": [1, 2]}}, "m.json") == {"department": [1, 2]}
    for bad in ([1], {"department": "1"}, {"department": [1, "2"]}, {"department": [True]}):
        with pytest.raises(CorruptFileError, match="manifest m.json: entry 'source_ids'"):
            read_source_ids({"source_ids": bad}, "m.json")
    with pytest.raises(UnknownTableError):
        read_source_ids({"source_ids": {"pg_authid": [1]}}, "m.json")
