"""The dashboard's rollups (issue 25) against real PostgreSQL and moto S3: kept by the real load batch by
batch, they equal the same aggregates computed from the current views after every kind of change (updates,
deletes, re-inserts, quarantined and parked rows, a design renamed); the dashboard's sections read from them
equal the sections computed from the current views; a warehouse without them gets them on the next load;
a failed batch leaves them as they were; the check finds a rollup that differs."""
import logging
from datetime import date

import pytest

import ingest
import load
import transform
from tests.support import dashboard_reference as reference
from tests.support.db import connect, run_sql
from totesys_local.dashboard import queries
from totesys_local.dashboard.queries import Filters
from totesys_local.aws_emulation import put_credentials_secret
from utils.db.connection import close_db_connection, credentials_from_url
from utils.load import rollups
from utils.load.schema import ensure_warehouse_schema

pytestmark = pytest.mark.slow

SECTIONS = ("sales_totals", "sales_by_month", "sales_by_country", "top_designs", "sales_by_staff",
            "purchases_against_sales", "payments")
FILTERS = (Filters(), Filters(start=date(2023, 3, 1), end=date(2023, 9, 30)),
           Filters(currencies=("GBP", "EUR")), Filters(start=date(2024, 1, 1), end=date(2024, 1, 1),
                                                       currencies=("USD",)))


def run_pipeline():
    return load.lambda_handler(transform.lambda_handler(ingest.lambda_handler({}, None), None), None)


def differences(url):
    conn = connect(url)
    try:
        return rollups.compare_rollups(conn)
    finally:
        close_db_connection(conn)


def assert_rollups_equal_facts(url):
    """Every rollup equals its aggregate of the current views, and every dashboard section read from the
    rollups equals the same section computed from the current views, under several filters."""
    assert differences(url) == []
    with queries.read_only(url) as conn:
        assert queries.status(conn) == "ready"
        assert queries.filter_choices(conn) == reference.filter_choices(conn)
        for filters in FILTERS:
            for section in SECTIONS:
                shown = getattr(queries, section)(conn, filters)
                assert shown == getattr(reference, section)(conn, filters), (section, filters)


def state(url):
    return run_sql(url, "SELECT fact_table, last_record_id, revision, batch_id FROM etl_rollup_state "
                        "ORDER BY 1")


def rollup_rows(url):
    return {table: sorted(map(tuple, run_sql(url, f"SELECT * FROM {table}")))  # nosec B608 - fixed names
            for table in rollups.ROLLUP_TABLES if table != rollups.STATE}


@pytest.fixture
def loaded(totesys_url, warehouse_url, pipeline_env):
    """Scale-1 totesys loaded once into the warehouse; returns (source, warehouse)."""
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()
    return totesys_url, warehouse_url


def test_rollups_equal_the_current_views_after_a_history_of_changes(loaded):
    source, warehouse = loaded
    assert_rollups_equal_facts(warehouse)
    assert run_sql(warehouse, "SELECT count(*) FROM rollup_sales_daily")[0][0] > 100

    # Updates: every key a rollup has changes for some orders, payments are paid, a purchase grows.
    run_sql(source, """UPDATE sales_order SET units_sold = units_sold + 7, currency_id = 1 + currency_id % 3,
                       staff_id = 1 + staff_id % 20,
                       agreed_delivery_location_id = 1 + agreed_delivery_location_id % 30,
                       design_id = 1 + design_id % 12, created_at = created_at - interval '40 days',
                       last_updated = now() WHERE sales_order_id % 97 = 0""")
    run_sql(source, "UPDATE payment SET paid = NOT paid, last_updated = now() WHERE payment_id % 89 = 0")
    run_sql(source, "UPDATE purchase_order SET item_quantity = item_quantity + 1, last_updated = now() "
                    "WHERE purchase_order_id % 53 = 0")
    run_pipeline()
    assert_rollups_equal_facts(warehouse)

    # Deletes: payments alone, a sales order with its transaction and payment, an order updated then
    # deleted before the next run.
    # groups where a deleted order is the only one: their rollup rows must go, not stay with a count of 0
    alone = run_sql(warehouse, "SELECT r.created_date, r.currency_id, r.location_id "
                               "FROM rollup_sales_by_location r JOIN current_sales_order o "
                               "ON (o.created_date, o.currency_id, o.agreed_delivery_location_id) "
                               "= (r.created_date, r.currency_id, r.location_id) "
                               "WHERE o.sales_order_id IN (194, 291) AND r.orders = 1")
    assert alone
    run_sql(source, "CREATE TABLE kept_payment AS SELECT * FROM payment WHERE payment_id IN (5, 6)")
    run_sql(source, "CREATE TABLE kept_order AS SELECT * FROM sales_order WHERE sales_order_id = 194")
    for order in (194, 291):
        run_sql(source, "UPDATE sales_order SET units_sold = 1, last_updated = now() "
                        "WHERE sales_order_id = :o", o=order)
        run_sql(source, "DELETE FROM payment WHERE transaction_id IN "
                        "(SELECT transaction_id FROM transaction WHERE sales_order_id = :o)", o=order)
        run_sql(source, "DELETE FROM transaction WHERE sales_order_id = :o", o=order)
    run_sql(source, "DELETE FROM sales_order WHERE sales_order_id IN (194, 291)")
    run_sql(source, "DELETE FROM payment WHERE payment_id IN (5, 6)")
    result = run_pipeline()
    assert result["deleted"]["payment"] >= 2 and result["deleted"]["sales_order"] == 2
    assert_rollups_equal_facts(warehouse)
    for day, currency, location in alone:
        assert run_sql(warehouse, "SELECT count(*) FROM rollup_sales_by_location WHERE created_date = :d "
                                  "AND currency_id = :c AND location_id = :l",
                       d=day, c=currency, l=location) == [[0]]

    # Re-inserts: payment 5 as a new version, order 194 exactly as it was (a version the facts hold:
    # no new fact row, only its deletion closed).
    columns = ", ".join(row[0] for row in run_sql(
        source, "SELECT column_name FROM information_schema.columns WHERE table_name = 'payment' "
                "AND column_name <> 'last_updated' ORDER BY ordinal_position"))
    run_sql(source, f"INSERT INTO payment ({columns}, last_updated) "  # nosec B608 - test SQL
                    f"SELECT {columns}, now() FROM kept_payment WHERE payment_id = 5")
    run_sql(source, "INSERT INTO sales_order SELECT * FROM kept_order")
    facts = run_sql(warehouse, "SELECT count(*) FROM fact_sales_order")[0][0]
    run_pipeline()
    assert run_sql(warehouse, "SELECT count(*) FROM fact_sales_order")[0][0] == facts
    assert run_sql(warehouse, "SELECT count(*) FROM current_sales_order WHERE sales_order_id = 194") == [[1]]
    assert_rollups_equal_facts(warehouse)

    # Quarantine: an impossible date keeps the order's previous version current; a design with a NULL
    # file location is rejected and the new order using it is parked, until both are fixed.
    run_sql(source, "UPDATE sales_order SET agreed_delivery_date = '2024-02-30', units_sold = 2, "
                    "last_updated = now() WHERE sales_order_id = 3")
    run_sql(source, "ALTER TABLE design ALTER file_location DROP NOT NULL")
    design = run_sql(source, "INSERT INTO design (design_name, file_location, file_name, last_updated) "
                             "VALUES ('Parked', NULL, 'parked.json', now()) RETURNING design_id")[0][0]
    run_sql(source, "INSERT INTO sales_order (design_id, staff_id, counterparty_id, units_sold, unit_price, "
                    "currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id, "
                    "last_updated) VALUES (:d, 1, 1, 5000, 3.00, 1, '2024-11-20', '2024-11-21', 1, now())",
            d=design)
    result = run_pipeline()
    assert result["rejected"] == {"sales_order": 2, "design": 1}
    assert_rollups_equal_facts(warehouse)
    run_sql(source, "UPDATE design SET file_location = '/x', last_updated = now() WHERE design_id = :d",
            d=design)
    run_sql(source, "UPDATE sales_order SET agreed_delivery_date = '2024-03-01', last_updated = now() "
                    "WHERE sales_order_id = 3")
    result = run_pipeline()
    assert result["rejected_rows"] == 0
    assert run_sql(warehouse, "SELECT count(*) FROM current_sales_order WHERE design_id = :d",
                   d=design) == [[1]]
    assert_rollups_equal_facts(warehouse)

    # Dimensions change: a design renamed (its untouched current orders move to the new name), an
    # address moves country; in the same batch one of the renamed design's orders is updated.
    renamed = run_sql(source, "SELECT design_id FROM sales_order GROUP BY 1 "
                              "ORDER BY count(*) DESC LIMIT 1")[0][0]
    run_sql(source, "UPDATE design SET design_name = 'Renamed', last_updated = now() WHERE design_id = :d",
            d=renamed)
    run_sql(source, "UPDATE sales_order SET units_sold = 3, last_updated = now() WHERE sales_order_id = "
                    "(SELECT min(sales_order_id) FROM sales_order WHERE design_id = :d)", d=renamed)
    run_sql(source, "UPDATE address SET country = 'Atlantis', last_updated = now() WHERE address_id = 2")
    run_pipeline()
    assert_rollups_equal_facts(warehouse)
    assert run_sql(warehouse, "SELECT count(*) > 0 FROM rollup_sales_by_design "
                              "WHERE design_name = 'Renamed'") == [[True]]


def test_a_batch_with_nothing_for_the_facts_changes_no_rollup(loaded):
    source, warehouse = loaded
    before = rollup_rows(warehouse)
    run_sql(source, "UPDATE staff SET first_name = 'Changed', last_updated = now() WHERE staff_id = 1")
    run_pipeline()
    assert rollup_rows(warehouse) == before
    assert_rollups_equal_facts(warehouse)


def test_a_warehouse_without_rollups_gets_them_on_the_next_load(loaded):
    source, warehouse = loaded
    for table in rollups.ROLLUP_TABLES:
        run_sql(warehouse, f"DROP TABLE {table}")
    with queries.read_only(warehouse) as conn:
        assert queries.status(conn) == "no-rollups"
    assert differences(warehouse)[0]["rollup"] == rollups.STATE
    run_sql(source, "UPDATE sales_order SET units_sold = 5, last_updated = now() WHERE sales_order_id = 10")
    result = run_pipeline()
    assert_rollups_equal_facts(warehouse)
    assert {row[3] for row in state(warehouse)} == set(result["batches"])


def test_rollups_of_another_definition_are_rebuilt_by_the_next_load(loaded):
    source, warehouse = loaded
    run_sql(warehouse, "UPDATE etl_rollup_state SET definition = 0")
    run_sql(warehouse, "UPDATE rollup_sales_daily SET orders = orders + 5")
    assert differences(warehouse)[0]["rollup"] == rollups.STATE
    run_sql(source, "UPDATE payment SET paid = true, last_updated = now() WHERE payment_id = 1")
    run_pipeline()
    assert_rollups_equal_facts(warehouse)
    assert {row[0] for row in run_sql(warehouse, "SELECT definition FROM etl_rollup_state")} \
        == {rollups.DEFINITION}


def test_the_check_names_a_rollup_that_differs_and_a_rebuild_repairs_it(loaded):
    _, warehouse = loaded
    day, currency = run_sql(warehouse, "SELECT created_date, currency_id FROM rollup_sales_daily LIMIT 1")[0]
    run_sql(warehouse, "UPDATE rollup_sales_daily SET orders = orders + 1 WHERE created_date = :d "
                       "AND currency_id = :c", d=day, c=currency)
    # One grouping set of the sales' check apart from the others: only the design rollup's row differs.
    run_sql(warehouse, "UPDATE rollup_sales_by_design SET units = units + 2 "
                       "WHERE (created_date, currency_id, design_name) IN (SELECT created_date, currency_id, "
                       "design_name FROM rollup_sales_by_design ORDER BY 1, 2, 3 LIMIT 1)")
    run_sql(warehouse, "DELETE FROM rollup_design_name WHERE design_id = 1")
    found = differences(warehouse)
    assert [(d["rollup"], d["missing"], d["unexpected"]) for d in found] == [
        ("rollup_sales_daily", 1, 1), ("rollup_sales_by_design", 1, 1), ("rollup_design_name", 1, 0)]
    assert found[0]["examples"]["unexpected"][0]["created_date"] == day.isoformat()
    revisions = sum(row[2] for row in state(warehouse))

    conn = connect(warehouse)
    try:
        conn.run("START TRANSACTION")
        rollups.rebuild_rollups(conn)
        conn.run("COMMIT")
    finally:
        close_db_connection(conn)
    assert_rollups_equal_facts(warehouse)
    assert sum(row[2] for row in state(warehouse)) != revisions


def test_a_batch_that_fails_after_the_rollups_leaves_them_as_they_were_and_the_retry_counts_once(
        loaded, monkeypatch):
    source, warehouse = loaded
    before, marks = rollup_rows(warehouse), state(warehouse)
    run_sql(source, "UPDATE sales_order SET units_sold = 9, last_updated = now() WHERE sales_order_id < 40")
    run_sql(source, "DELETE FROM payment WHERE payment_id = 7")
    import utils.load.merge as merge

    def fail(*args, **kwargs):
        raise RuntimeError("the ledger write fails (simulated crash)")
    with monkeypatch.context() as patch:
        patch.setattr(merge, "record_batch", fail)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_pipeline()
    assert rollup_rows(warehouse) == before and state(warehouse) == marks
    result = load.lambda_handler({}, None)
    assert len(result["batches"]) == 1
    assert_rollups_equal_facts(warehouse)
    assert load.lambda_handler({}, None)["batches"] == []
    assert_rollups_equal_facts(warehouse)


def test_a_load_role_that_may_not_create_the_rollups_still_loads_and_a_later_load_creates_them(
        totesys_url, warehouse_url, pipeline_env, monkeypatch, caplog):
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    conn = connect(warehouse_url)
    try:
        ensure_warehouse_schema(conn)  # by the owner: the warehouse's tables, no rollups yet
    finally:
        close_db_connection(conn)
    owner = credentials_from_url(warehouse_url)
    loader = f"postgresql://rollup_loader:not-the-owner@{owner['host']}:{owner['port']}/{owner['database']}"
    run_sql(warehouse_url, "CREATE ROLE rollup_loader LOGIN PASSWORD 'not-the-owner'")
    try:
        run_sql(warehouse_url, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                               "TO rollup_loader; "
                               "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO rollup_loader")
        put_credentials_secret("test/warehouse-loader", loader)
        monkeypatch.setenv("WAREHOUSE_SECRET_ID", "test/warehouse-loader")
        with caplog.at_level(logging.WARNING):
            result = run_pipeline()
    finally:
        run_sql(warehouse_url, "DROP OWNED BY rollup_loader")
        run_sql(warehouse_url, "DROP ROLE rollup_loader")
    orders = run_sql(totesys_url, "SELECT count(*) FROM sales_order")[0][0]
    assert result["tables"]["fact_sales_order"] == orders
    assert [r for r in caplog.records if r.getMessage().startswith("dashboard rollups not created")]
    with queries.read_only(warehouse_url) as conn:
        assert queries.status(conn) == "no-rollups"

    monkeypatch.setenv("WAREHOUSE_SECRET_ID", "test/warehouse")  # the owner loads next
    run_sql(totesys_url, "UPDATE sales_order SET units_sold = 5, last_updated = now() "
                         "WHERE sales_order_id = 10")
    run_pipeline()
    assert_rollups_equal_facts(warehouse_url)


NEW_ORDERS = ("INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, "
              "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
              "agreed_delivery_location_id) SELECT localtimestamp - n * interval '1 day', localtimestamp, "
              "1 + n % 5, 1 + n % 7, 1, n, 2.50, 1 + n % 3, '2024-12-01', '2024-12-02', 1 + n % 4 "
              "FROM generate_series(1, 25) n")


def test_a_bounded_first_load_and_a_batch_mixing_new_and_held_ids_keep_the_rollups_equal(
        totesys_url, warehouse_url, pipeline_env, monkeypatch):
    """After the first batch (a fill) every batch of a bounded first load brings new ids only (their
    current rows aggregated directly); then one batch brings new orders with updates and a deletion of
    ids the warehouse holds (both paths in one statement). Every batch labels its design names by a join,
    as a large batch does (the other tests' small batches take the index-probe path)."""
    monkeypatch.setattr(rollups, "PROBE_BATCH_ROWS", -1)
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    rows = run_sql(totesys_url, "SELECT (SELECT count(*) FROM sales_order) + (SELECT count(*) FROM "
                                "purchase_order) + (SELECT count(*) FROM payment)")[0][0]
    monkeypatch.setenv("MAX_BATCH_ROWS", str(rows // 3 + 1))
    batches = 0
    for _ in range(10):
        loaded = run_pipeline()["batches"]
        if not loaded:
            break
        batches += len(loaded)
        assert differences(warehouse_url) == []
    assert batches >= 3
    monkeypatch.delenv("MAX_BATCH_ROWS")

    held = run_sql(warehouse_url, "SELECT max(sales_order_id) FROM fact_sales_order")[0][0]
    run_sql(totesys_url, NEW_ORDERS)
    run_sql(totesys_url, "UPDATE sales_order SET units_sold = units_sold + 3, currency_id = 2, "
                         "last_updated = now() WHERE sales_order_id % 41 = 0 AND sales_order_id <= :held",
            held=held)
    run_sql(totesys_url, "UPDATE payment SET paid = NOT paid, last_updated = now() WHERE payment_id % 37 = 0")
    run_sql(totesys_url, "DELETE FROM payment WHERE payment_id = 4")
    result = run_pipeline()
    assert result["deleted"]["payment"] == 1
    assert run_sql(warehouse_url, "SELECT count(DISTINCT sales_order_id) FROM fact_sales_order "
                                  "WHERE sales_order_id > :held", held=held) == [[25]]
    assert_rollups_equal_facts(warehouse_url)


def test_new_ids_above_max_id_a_gap_below_it_and_a_renamed_designs_new_orders_keep_the_rollups_equal(
        loaded):
    """The paths of the state's max_id: a batch's orders above it are added with no probe; an id below it
    the warehouse never held (a gap: deleted from totesys before the first load, re-inserted now) is new
    too; a design renamed in the batch that also brings new orders of it moves only its held orders."""
    source, warehouse = loaded
    marks = {fact: (mark, max_id) for fact, mark, max_id in run_sql(
        warehouse, "SELECT fact_table, last_record_id, max_id FROM etl_rollup_state")}
    for fact, (mark, max_id) in marks.items():
        column = rollups.FACT_SOURCES[fact].id_column
        assert run_sql(warehouse, f"SELECT max({column}) FROM {fact}")[0][0] == max_id  # nosec B608

    held = marks["fact_sales_order"][1]
    gap = run_sql(warehouse, "SELECT min(sales_order_id) FROM fact_sales_order")[0][0] + 3
    run_sql(warehouse, "DELETE FROM fact_sales_order WHERE sales_order_id = :gap", gap=gap)
    conn = connect(warehouse)  # the warehouse as if order `gap` had never been loaded
    try:
        conn.run("START TRANSACTION")
        rollups.rebuild_rollups(conn)
        conn.run("COMMIT")
    finally:
        close_db_connection(conn)
    run_sql(source, "UPDATE sales_order SET last_updated = now(), units_sold = units_sold + 1 "
                    "WHERE sales_order_id = :gap", gap=gap)
    run_sql(source, NEW_ORDERS)
    run_sql(source, "UPDATE design SET design_name = design_name || ' renamed', last_updated = now() "
                    "WHERE design_id = 2")
    run_pipeline()
    assert run_sql(warehouse, "SELECT count(*) FROM fact_sales_order WHERE sales_order_id = :gap",
                   gap=gap) == [[1]]
    assert run_sql(warehouse, "SELECT count(*) FROM fact_sales_order WHERE sales_order_id > :held "
                              "AND design_id = 2", held=held)[0][0] > 0
    assert_rollups_equal_facts(warehouse)
    assert run_sql(warehouse, "SELECT max_id FROM etl_rollup_state WHERE fact_table = 'fact_sales_order'") \
        == run_sql(warehouse, "SELECT max(sales_order_id) FROM fact_sales_order")

    # A batch bringing only a new design (no fact changed, nothing renamed): no rollup statement runs, yet
    # the design's name is filed.
    run_sql(source, "INSERT INTO design (design_name, file_location, file_name, last_updated) "
                    "VALUES ('Alone', '/a', 'alone.json', now())")
    before = state(warehouse)
    run_pipeline()
    assert state(warehouse) == before
    assert run_sql(warehouse, "SELECT count(*) FROM rollup_design_name WHERE design_name = 'Alone'") == [[1]]
    assert_rollups_equal_facts(warehouse)
