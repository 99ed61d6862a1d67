"""Adding a column (docs/DESIGN.md, "Adding a column"), end to end: a nullable ``design.colour`` carried to
``dim_design.colour`` by extending the two catalogues only (the checklist's files, as this test edits them
in-process), through ingest, transform and load, into a warehouse built before the change and into a
fresh one (the rebuild: every batch, those landed before the column existed included)."""
import boto3
import pyarrow as pa
import pytest

import ingest
import load
import transform

from tests.support.db import connect, run_sql
from tests.support.ingest_mode import cdc_session
from tests.support.pipeline import run_pipeline
from utils.catalog import source, warehouse
from utils.db.connection import close_db_connection
from utils.load.rollups import compare_rollups
from utils.load.schema import ensure_warehouse_schema
from utils.rebuild.run import rebuild_warehouse

COLOUR = pa.field("colour", pa.string(), nullable=True)


def add_catalogue_column(monkeypatch):
    """The checklist's edits: ``colour`` in the source catalogue's design (SOURCE_SCHEMAS, landing files
    follow) and in the warehouse catalogue's dim_design (WAREHOUSE_SCHEMAS, processed files follow).
    dim_design copies same-named source columns, so transform/star.py needs no change."""
    design = source.SOURCE_SCHEMAS["design"].append(COLOUR)
    monkeypatch.setitem(source.SOURCE_SCHEMAS, "design", design)
    monkeypatch.setitem(source.LANDING_SCHEMAS, "design", source.landing_schema(design))
    dim_design = warehouse.WAREHOUSE_SCHEMAS["dim_design"].append(COLOUR)
    monkeypatch.setitem(warehouse.WAREHOUSE_SCHEMAS, "dim_design", dim_design)
    monkeypatch.setitem(warehouse.PROCESSED_SCHEMAS, "dim_design",
                        warehouse.processed_schema("dim_design", dim_design))


def colours(url):
    return run_sql(url, "SELECT design_id, design_name, colour FROM dim_design ORDER BY design_id")


def assert_views_and_rollups_work(url):
    """The current views, the deleted-rows view and the rollups read the warehouse as before."""
    ordered = run_sql(url, "SELECT d.design_id, d.colour, count(*) FROM current_sales_order s "
                      "JOIN dim_design d USING (design_id) GROUP BY 1, 2 ORDER BY 1")
    assert ordered == [[1, "teal", 2], [3, "red", 1]]
    assert run_sql(url, "SELECT count(*) FROM deleted_dimension_rows") == [[0]]
    conn = connect(url)
    try:
        assert compare_rollups(conn) == []
    finally:
        close_db_connection(conn)


@pytest.mark.slow
def test_a_nullable_source_column_reaches_an_existing_and_a_fresh_warehouse(
        source_url, warehouse_url, new_database, pipeline_env, monkeypatch):
    buckets = pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    run_sql(source_url, "INSERT INTO design (created_at, design_name, file_location, file_name, "
            "last_updated) VALUES (now() - interval '2 days', 'Bamboo', '/usr', 'bamboo.json', "
            "now() - interval '1 day')")
    run_pipeline()  # the existing warehouse, built before the change
    assert "colour" not in [row[0] for row in run_sql(
        warehouse_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'dim_design'")]

    # The source gains the column: design 1 is updated with a colour, design 3 is new with one (and sold),
    # design 2 is untouched.
    run_sql(source_url, "ALTER TABLE design ADD COLUMN colour text")
    run_sql(source_url, "UPDATE design SET colour = 'teal', last_updated = now() WHERE design_id = 1")
    run_sql(source_url, "INSERT INTO design (design_name, file_location, file_name, colour, last_updated) "
            "VALUES ('Cotton', '/usr', 'cotton.json', 'red', now())")
    run_sql(source_url, "INSERT INTO sales_order (last_updated, design_id, staff_id, counterparty_id, "
            "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
            "agreed_delivery_location_id) VALUES (now(), 3, 1, 1, 5, 3.25, 1, '2024-12-01', '2024-12-02', 1)")
    add_catalogue_column(monkeypatch)

    # (b) the existing warehouse gets the column on the next load: its old row NULL, new and updated
    # rows with their values
    assert run_pipeline()["batches"]
    expected = [[1, "Wooden", "teal"], [2, "Bamboo", None], [3, "Cotton", "red"]]
    assert colours(warehouse_url) == expected
    assert_views_and_rollups_work(warehouse_url)  # (c)
    # The column's values filled in the source afterwards, without a new last_updated (a data migration):
    # the incremental read never sees them; a resync of the table lands every row and fills the dimension.
    run_sql(source_url, "UPDATE design SET colour = 'sand' WHERE design_id = 2")
    run_pipeline()
    if cdc_session():  # CDC (make test-cdc) reads the update whatever its last_updated
        expected[1][2] = "sand"
    assert colours(warehouse_url) == expected
    run_pipeline({"resync": ["design"]})
    expected[1][2] = "sand"
    assert colours(warehouse_url) == expected

    # (a) a fresh warehouse (the rebuild into a new database: both batches transformed again, the first
    # landed without the column) is created with the column and holds the same values
    fresh = new_database()
    conn = connect(fresh)
    try:
        rebuilt = rebuild_warehouse(conn, boto3.client("s3"), buckets["ingest"], buckets["processed"],
                                    connect=lambda: connect(fresh))
    finally:
        close_db_connection(conn)
    assert len(rebuilt["loaded"]) == len(run_sql(warehouse_url, "SELECT batch_id FROM etl_load_ledger"))
    assert colours(fresh) == expected
    assert run_sql(fresh, "SELECT data_type FROM information_schema.columns WHERE table_name = 'dim_design' "
                   "AND column_name = 'colour'") == [["character varying"]]
    assert_views_and_rollups_work(fresh)  # (c)


@pytest.mark.slow
def test_a_batch_transformed_before_the_change_loads_after_it(source_url, warehouse_url, pipeline_env,
                                                              monkeypatch):
    """The deploy lands between a batch's transform and its load: its processed files lack the column."""
    pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    transformed = transform.lambda_handler(ingest.lambda_handler({}, None), None)
    add_catalogue_column(monkeypatch)
    assert load.lambda_handler(transformed, None)["batches"] == transformed["batches"]
    assert colours(warehouse_url) == [[1, "Wooden", None]]


def test_a_fact_column_added_to_an_existing_warehouse_joins_its_current_view(warehouse_url, monkeypatch):
    conn = connect(warehouse_url)
    try:
        ensure_warehouse_schema(conn)  # the warehouse before the change
        note = pa.field("payment_note", pa.string(), nullable=True)
        monkeypatch.setitem(warehouse.WAREHOUSE_SCHEMAS, "fact_payment",
                            warehouse.WAREHOUSE_SCHEMAS["fact_payment"].append(note))
        targets = ensure_warehouse_schema(conn)
    finally:
        close_db_connection(conn)
    assert "payment_note" in targets["fact_payment"].names
    viewed = run_sql(warehouse_url, "SELECT column_name FROM information_schema.columns "
                     "WHERE table_name = 'current_payment' ORDER BY ordinal_position")
    assert viewed[-2:] == [["etl_load_order"], ["payment_note"]]
