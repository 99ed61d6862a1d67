"""`rebuild`: the warehouse re-derived from the landing zone alone equals the incrementally built one."""
import boto3
import pytest

from tests.support.compare import contents, relations
from tests.support.db import connect, run_sql
from tests.support.pipeline import run_pipeline
from utils.db.connection import close_db_connection
from utils.errors import ObjectExistsError
from utils.rebuild.run import RebuildError, rebuild_warehouse


def rebuild_into(url, buckets, generation=None):
    conn = connect(url)
    try:
        return rebuild_warehouse(conn, boto3.client("s3"), buckets["ingest"], buckets["processed"],
                                 generation=generation, connect=lambda: connect(url))
    finally:
        close_db_connection(conn)


def run_until_caught_up(event=None):
    """Rounds of the pipeline until no batch is cut short (as the state machine loops)."""
    for _ in range(20):
        result = run_pipeline(event)
        event = None
        if not result["batches"]:
            return
    raise AssertionError("still more waiting after 20 rounds")


NEW_ORDERS = ("INSERT INTO sales_order (sales_order_id, created_at, last_updated, design_id, staff_id, "
              "counterparty_id, units_sold, unit_price, currency_id, agreed_delivery_date, "
              "agreed_payment_date, "
              "agreed_delivery_location_id) SELECT n, localtimestamp, localtimestamp + n * "
              "interval '1 millisecond', "
              "1, 1, 1, n * 10, 3.25, 1, "
              "'2024-12-01', '2024-12-02', 2 FROM generate_series(CAST(:lo AS int), CAST(:hi AS int)) n")


@pytest.mark.slow
def test_a_rebuild_equals_the_incrementally_built_warehouse(pipeline_env, source_url, warehouse_url,
                                                            new_database,
                                                            monkeypatch):
    buckets = pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    monkeypatch.setenv("MAX_BATCH_ROWS", "2")  # bounded batches: several per catch-up
    run_until_caught_up()
    run_sql(source_url, NEW_ORDERS, lo=10, hi=19)
    run_until_caught_up()
    # Updates to facts and to a dimension (the counterparty follows its address).
    run_sql(source_url, "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = localtimestamp "
                        "WHERE sales_order_id IN (1, 10, 11)")
    run_sql(source_url, "UPDATE payment SET paid = true, last_updated = localtimestamp")
    run_sql(source_url, "UPDATE address SET city = 'Bradford', last_updated = localtimestamp "
                        "WHERE address_id = 1")
    run_until_caught_up()
    # An update that kept its stamp, repaired by a re-sync: a second version of that stamp (defect 8).
    run_sql(source_url, "UPDATE sales_order SET units_sold = 777 WHERE sales_order_id = 2")
    run_until_caught_up({"resync": ["sales_order"]})
    assert run_sql(warehouse_url, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 2") \
        == [[777]]
    # A bad value quarantined, then fixed; deletes; a re-insert of a deleted id.
    run_sql(source_url, "UPDATE purchase_order SET agreed_delivery_date = '2024-02-30', "
                        "last_updated = localtimestamp")
    run_sql(source_url, "DELETE FROM sales_order WHERE sales_order_id IN (12, 13)")
    run_until_caught_up()
    run_sql(source_url, "UPDATE purchase_order SET agreed_delivery_date = '2024-03-01', "
                        "last_updated = localtimestamp")
    run_sql(source_url, NEW_ORDERS, lo=12, hi=12)
    run_until_caught_up()
    # A mass deletion held, then approved.
    run_sql(source_url, "DELETE FROM sales_order WHERE sales_order_id BETWEEN 14 AND 19")
    run_until_caught_up()
    run_until_caught_up({"approve_deletes": ["sales_order"]})
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_rejected_rows")[0][0] == 1
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_deleted_rows")[0][0] == 8
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_load_ledger")[0][0] >= 11  # bounded: cut often

    rebuilt = new_database()
    result = rebuild_into(rebuilt, buckets)

    assert result["loaded"] == [row[0] for row in run_sql(warehouse_url,
                                                          "SELECT batch_id FROM etl_load_ledger ORDER BY 1")]
    assert relations(rebuilt) == relations(warehouse_url)
    for relation in relations(warehouse_url):
        assert contents(rebuilt, relation) == contents(warehouse_url, relation), relation
    # The rebuild wrote its own generation: the pipeline's processed objects are untouched, and running it
    # again into the same target is refused.
    keys = [obj["Key"] for obj in boto3.client("s3").list_objects_v2(
        Bucket=buckets["processed"], Prefix="_generations/")["Contents"]]
    assert keys and all(key.startswith(f"_generations/{result['generation']}/") for key in keys)
    with pytest.raises(RebuildError):
        rebuild_into(rebuilt, buckets)


@pytest.mark.slow
def test_a_rebuild_refuses_a_generation_that_exists(loaded, new_database):
    _, _, buckets = loaded
    first = rebuild_into(new_database(), buckets)
    from utils.rebuild.generation import check_new
    with pytest.raises(ObjectExistsError, match=first["generation"]):
        check_new(boto3.client("s3"), buckets["processed"], first["generation"])
    # Resuming a finished rebuild does nothing more.
    target = new_database()
    again = rebuild_into(target, buckets, generation=first["generation"])
    assert again["transformed"] == []


@pytest.mark.slow
def test_selected_tables_are_replaced_in_place_by_their_rebuilt_contents(loaded, new_database, check):
    from utils.rebuild.in_place import replace_tables
    source, warehouse, buckets = loaded
    run_sql(warehouse, "UPDATE dim_design SET design_name = 'Tampered'")
    run_sql(warehouse, "DELETE FROM fact_sales_order WHERE sales_order_id = 2")
    run_sql(warehouse, "UPDATE fact_payment SET payment_amount = 1")
    assert check(source, warehouse, buckets["ingest"]).exit_code == 1
    scratch = new_database()
    rebuild_into(scratch, buckets)

    live, rebuilt = connect(warehouse), connect(scratch)
    try:
        replaced = replace_tables(live, rebuilt, ["fact_payment", "dim_design", "fact_sales_order"])
    finally:
        close_db_connection(live)
        close_db_connection(rebuilt)

    assert replaced == {"dim_design": 1, "fact_sales_order": 2, "fact_payment": 1}
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0
    for table in replaced:
        assert contents(warehouse, table) == contents(scratch, table), table
    # The serial continues after the rebuilt keys: the next load appends without a clash.
    run_sql(source, "UPDATE payment SET paid = true, last_updated = localtimestamp")
    run_pipeline()
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0


@pytest.mark.slow
def test_a_load_after_an_in_place_replacement_orders_after_the_rebuilt_versions(loaded, new_database, check):
    """docs/RELIABILITY.md defect 3: the rebuilt rows keep the rebuild's load orders; a live warehouse whose
    sequence is behind them (here: migrated from before the load order, its rows of order 0) must order
    its next batch after them, else the rebuilt version stays current."""
    from utils.rebuild.in_place import replace_tables
    source, warehouse, buckets = loaded
    paid = "UPDATE payment SET payment_amount = :amount, last_updated = localtimestamp WHERE payment_id = 1"
    run_sql(source, paid, amount=2)
    run_pipeline()
    run_sql(warehouse, "UPDATE fact_payment SET etl_load_order = 0")
    run_sql(warehouse, "ALTER SEQUENCE etl_load_order_seq RESTART WITH 1")
    scratch = new_database()
    rebuild_into(scratch, buckets)
    assert run_sql(scratch, "SELECT max(etl_load_order) FROM fact_payment") == [[2]]
    live, rebuilt = connect(warehouse), connect(scratch)
    try:
        replace_tables(live, rebuilt, ["fact_payment"])
    finally:
        close_db_connection(live)
        close_db_connection(rebuilt)

    run_sql(source, paid, amount=3)
    run_pipeline()
    assert run_sql(warehouse, "SELECT payment_amount FROM current_payment WHERE payment_id = 1") == [[3]]
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0


@pytest.mark.slow
def test_a_dimension_row_still_referenced_stops_its_replacement_and_changes_nothing(loaded, new_database):
    from utils.errors import UnknownTableError
    from utils.rebuild.in_place import InPlaceError, replace_tables
    _, warehouse, buckets = loaded
    run_sql(warehouse, "INSERT INTO dim_design VALUES (99, 'Extra', '/x', 'x.json')")
    run_sql(warehouse, "UPDATE fact_sales_order SET design_id = 99 WHERE sales_order_id = 1")
    before = contents(warehouse, "dim_design")
    scratch = new_database()
    rebuild_into(scratch, buckets)
    live, rebuilt = connect(warehouse), connect(scratch)
    try:
        with pytest.raises(InPlaceError, match="dim_design"):
            replace_tables(live, rebuilt, ["dim_design"])
        with pytest.raises(UnknownTableError):
            replace_tables(live, rebuilt, ["etl_load_ledger"])
    finally:
        close_db_connection(live)
        close_db_connection(rebuilt)
    assert contents(warehouse, "dim_design") == before
