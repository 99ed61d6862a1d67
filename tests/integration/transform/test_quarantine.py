"""Bad rows are quarantined, never a reason to stop the good ones (SPEC §4.10), against a real warehouse.

Hand-written landing batches (every column nullable, as ingest lands them) go through the real transform
and load handlers into a real PostgreSQL warehouse whose columns are narrower than the data (varchar(12),
smallint), as existing warehouses may be.
"""
import logging
from decimal import Decimal

import pyarrow as pa
import pytest

import load
import transform
from utils.load.schema import schema_statements
from utils.catalog.source import LANDING_SCHEMAS
from tests.support.batches import (T0, address, base_batch, counterparty, later, sales_order, source_table,
                                   write_ingest_batch)
from tests.support.db import run_sql

NARROW = {"design_name varchar NOT NULL": "design_name varchar(12) NOT NULL",
          "units_sold integer NOT NULL": "units_sold smallint NOT NULL"}


@pytest.fixture
def narrow_warehouse(pipeline_env, warehouse_url):
    """A warehouse that already exists, with dim_design.design_name varchar(12) and
    fact_sales_order.units_sold smallint."""
    for statement in schema_statements():
        for wide, narrow in NARROW.items():
            statement = statement.replace(wide, narrow)
        run_sql(warehouse_url, statement)
    pipeline_env(warehouse_url=warehouse_url)
    return warehouse_url


def landing(rows_by_table):
    """Landing tables as ingest writes them: the source types, every column nullable."""
    return {name: pa.Table.from_pylist(rows, schema=LANDING_SCHEMAS[name])
            for name, rows in rows_by_table.items()}


def design(design_id, name, at=T0):
    return {"design_id": design_id, "created_at": at, "last_updated": at, "design_name": name,
            "file_location": "/usr", "file_name": f"design-{design_id}.json"}


def run_batch(s3, buckets, batch_time, rows_by_table):
    write_ingest_batch(s3, buckets["ingest"], batch_time, landing(rows_by_table))
    return load.lambda_handler(transform.lambda_handler({}, None), None)


def rejected(url):
    return run_sql(url, "SELECT source_table, source_id, column_name, reason, value, row_data IS NOT NULL, "
                   "resolved_batch_id FROM etl_rejected_rows ORDER BY source_table, source_id")


def ids(url, table, column):
    return sorted(row[0] for row in run_sql(url, f"SELECT {column} FROM {table}"))  # nosec B608 - test SQL


def test_bad_rows_are_quarantined_the_rest_loads_and_fixed_versions_load_later(
        s3, buckets, narrow_warehouse, caplog):
    batch = base_batch()
    batch["address"].append(address(3, city=None))                      # NULL where a city is needed
    batch["counterparty"].append(counterparty(4, 3))                     # its address was rejected
    batch["sales_order"][1]["agreed_delivery_date"] = "2024-02-30"       # no such date
    batch["design"].append(design(2, "A design name far too long"))      # longer than varchar(12)
    batch["sales_order"].append(sales_order(3, design_id=2))             # references the rejected design
    batch["sales_order"].append(sales_order(4, units_sold=50_000))       # overflows smallint
    with caplog.at_level(logging.ERROR):
        result = run_batch(s3, buckets, T0, batch)

    assert result["rejected_rows"] == 6
    assert result["rejected"] == {"address": 1, "counterparty": 1, "design": 1, "sales_order": 3}
    assert rejected(narrow_warehouse) == [
        ["address", 3, "city", "NULL in a column the warehouse requires", None, False, None],
        ["counterparty", 4, "legal_address_id",
         "references address 3, which no batch has delivered (or which was rejected)", "3", False, None],
        ["design", 2, "design_name", "does not fit dim_design.design_name (at most 12 characters)",
         "A design name far too long", False, None],
        ["sales_order", 2, "agreed_delivery_date", "not a valid 'YYYY-MM-DD' date", "2024-02-30", False,
         None],
        ["sales_order", 3, "design_id",
         "references dim_design 2, which the warehouse does not hold (its source row was rejected or not "
         "delivered); parked until it arrives", "2", True, None],
        ["sales_order", 4, "units_sold", "does not fit fact_sales_order.units_sold (integers from -32768 to "
         "32767)", "50000", False, None]]
    # the good rows of the same batch loaded
    assert ids(narrow_warehouse, "fact_sales_order", "sales_order_id") == [1]
    assert ids(narrow_warehouse, "fact_payment", "payment_id") == [1, 2, 3]
    assert ids(narrow_warehouse, "dim_location", "location_id") == [1, 2]
    assert ids(narrow_warehouse, "dim_counterparty", "counterparty_id") == [1, 2, 3]
    assert ids(narrow_warehouse, "dim_design", "design_id") == [1]
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.getMessage() == "row rejected"]
    assert len(errors) == 6
    assert not [r for r in caplog.records if r.levelname == "CRITICAL"]

    # The source is corrected: every fixed row is a new version (new last_updated) and loads as usual;
    # the parked order loads as soon as its design arrives.
    fixes = {"address": [address(3, at=later(10), city="York")],
             "design": [design(2, "Short name", at=later(10))],
             "sales_order": [sales_order(2, updated=later(10)),
                             sales_order(4, updated=later(10), units_sold=5_000)]}
    result = run_batch(s3, buckets, later(15), fixes)
    assert result["rejected_rows"] == 0
    assert ids(narrow_warehouse, "dim_location", "location_id") == [1, 2, 3]
    assert ids(narrow_warehouse, "dim_counterparty", "counterparty_id") == [1, 2, 3, 4]
    assert ids(narrow_warehouse, "dim_design", "design_id") == [1, 2]
    assert ids(narrow_warehouse, "fact_sales_order", "sales_order_id") == [1, 2, 3, 4]
    parked = run_sql(narrow_warehouse,
                     "SELECT resolved_batch_id FROM etl_rejected_rows WHERE row_data IS NOT NULL")
    assert parked == [["20241125T094515123000"]]
    assert run_sql(narrow_warehouse, "SELECT units_sold, unit_price FROM fact_sales_order "
                   "WHERE sales_order_id = 3") == [[1003, Decimal("2.50")]]


def test_a_rejected_row_is_recorded_once_however_often_it_is_landed(s3, buckets, narrow_warehouse):
    """Overlapping ingest windows may land the same version twice: one record, counted once."""
    bad = {"sales_order": [sales_order(7, units_sold=40_000)]}
    first = run_batch(s3, buckets, T0, {**base_batch(), **{"sales_order": bad["sales_order"]}})
    again = run_batch(s3, buckets, later(5), bad)
    assert first["rejected_rows"] == 1 and again["rejected_rows"] == 0
    assert run_sql(narrow_warehouse, "SELECT count(*) FROM etl_rejected_rows")[0][0] == 1


def test_a_parked_fact_whose_dimension_stays_missing_stays_parked(s3, buckets, narrow_warehouse):
    batch = base_batch()
    batch["design"].append(design(2, "A design name far too long"))
    batch["sales_order"].append(sales_order(3, design_id=2))
    run_batch(s3, buckets, T0, batch)
    # a later batch without the design: the order is retried, still dangling, parked again
    result = run_batch(s3, buckets, later(5), {"sales_order": [sales_order(9)]})
    assert result["rejected_rows"] == 0
    assert ids(narrow_warehouse, "fact_sales_order", "sales_order_id") == [1, 2, 9]
    assert run_sql(narrow_warehouse, "SELECT source_id, resolved_batch_id FROM etl_rejected_rows "
                   "WHERE row_data IS NOT NULL") == [[3, None]]


def test_a_dimension_takes_the_version_loaded_last_even_when_stamped_earlier(s3, buckets, narrow_warehouse):
    """docs/RELIABILITY.md defect 3: a later batch carries the source's state after an earlier batch's,
    so its version wins whatever its last_updated (a back-dated update, a clock that went back)."""
    batch = base_batch()
    batch["address"][0] = address(1, at=later(30), city="York")
    run_batch(s3, buckets, later(31), batch)
    # the next batch brings address 1 stamped before the version held (the source's clock went back)
    run_batch(s3, buckets, later(40), {"address": [address(1, at=later(20), city="Hull")]})
    assert run_sql(narrow_warehouse, "SELECT city FROM dim_location WHERE location_id = 1") == [["Hull"]]
    assert run_sql(narrow_warehouse, "SELECT counterparty_legal_city FROM dim_counterparty "
                   "WHERE counterparty_id = 1") == [["Hull"]]
    versions = run_sql(narrow_warehouse, "SELECT v.last_updated, v.load_order = l.load_order "
                       "FROM etl_dimension_version v, etl_load_ledger l WHERE v.table_name = 'dim_location' "
                       "AND v.source_id = 1 AND l.batch_id = '20241125T101015123000'")
    assert versions == [[later(20).replace(tzinfo=None), True]]
    # a later one still wins
    run_batch(s3, buckets, later(50), {"address": [address(1, at=later(45), city="Leeds")]})
    assert run_sql(narrow_warehouse, "SELECT city FROM dim_location WHERE location_id = 1") == [["Leeds"]]


def test_a_parked_fact_keeps_the_order_of_the_batch_that_parked_it(s3, buckets, narrow_warehouse):
    """A version parked (its design missing) and loaded only after a newer version of its order loaded
    must not become current: it keeps the load order of the batch that parked it."""
    batch = base_batch()
    batch["design"].append(design(2, "A design name far too long"))
    batch["sales_order"].append(sales_order(3, design_id=2, units_sold=111))
    run_batch(s3, buckets, T0, batch)
    # the order changes to a design the warehouse holds: this version loads
    run_batch(s3, buckets, later(5), {"sales_order": [sales_order(3, updated=later(4), units_sold=222)]})
    # the design is fixed: the parked version loads now, after the newer one
    result = run_batch(s3, buckets, later(10), {"design": [design(2, "Short name", at=later(9))]})
    assert result["tables"]["fact_sales_order"] == 1
    history = run_sql(narrow_warehouse, "SELECT f.units_sold, f.etl_load_order = l.load_order, l.batch_id "
                      "FROM fact_sales_order f JOIN etl_load_ledger l ON l.load_order = f.etl_load_order "
                      "WHERE f.sales_order_id = 3 ORDER BY f.sales_record_id")
    assert history == [[222, True, "20241125T093515123000"], [111, True, "20241125T093015123000"]]
    assert run_sql(narrow_warehouse, "SELECT units_sold FROM current_sales_order "
                   "WHERE sales_order_id = 3") == [[222]]
    from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
    from utils.load.rollups import compare_rollups
    conn = connect_to_db(credentials_from_url(narrow_warehouse))
    try:
        assert compare_rollups(conn) == []
    finally:
        close_db_connection(conn)


def test_a_warehouse_column_too_narrow_for_dim_date_fails_clearly(s3, buckets, pipeline_env,
                                                                  warehouse_url):
    for statement in schema_statements():
        run_sql(warehouse_url, statement.replace("day_name varchar NOT NULL", "day_name varchar(3) NOT NULL"))
    pipeline_env(warehouse_url=warehouse_url)
    write_ingest_batch(s3, buckets["ingest"], T0, landing(base_batch()))
    with pytest.raises(Exception) as err:
        load.lambda_handler(transform.lambda_handler({}, None), None)
    assert "warehouse table dim_date: column 'day_name' is too narrow for" in str(err.value)
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_load_ledger")[0][0] == 0


def test_csv_stream_of_a_table_whose_first_batch_is_empty_is_clean_csv():
    """pyarrow 18 writes NUL bytes for such a table; the loader must not send them to COPY."""
    from utils.load.merge import csv_stream
    from utils.catalog.formats import REJECTED_SCHEMA, rejected_records
    table = pa.concat_tables([REJECTED_SCHEMA.empty_table(),
                              rejected_records("design", [2], None, "design_name", "too long", ["x"])])
    assert csv_stream(table).getvalue() == b'"design",2,,"design_name","too long","x",\n'


@pytest.mark.slow
def test_bad_values_in_totesys_are_quarantined_end_to_end_and_load_once_fixed(
        totesys_url, warehouse_url, pipeline_env):
    """The real ingest, transform and load on scale-1 totesys, into a warehouse whose dim_location.city
    is varchar(20): a NULL city (NOT NULL dropped in the source), a city too long for the warehouse and an
    impossible agreed date are quarantined; a good change in the same batch loads; the fixes load."""
    import ingest
    for statement in schema_statements():
        run_sql(warehouse_url,
                statement.replace("    city varchar NOT NULL", "    city varchar(20) NOT NULL"))
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)

    def run():
        return load.lambda_handler(transform.lambda_handler(ingest.lambda_handler({}, None), None), None)

    assert run()["rejected_rows"] == 0
    run_sql(totesys_url, "ALTER TABLE address ALTER city DROP NOT NULL")
    run_sql(totesys_url, "UPDATE address SET city = NULL, last_updated = now() WHERE address_id = 1")
    run_sql(totesys_url, "UPDATE address SET city = 'Llanfairpwllgwyngyllgogerychwyrndrobwll', "
            "last_updated = now() WHERE address_id = 2")
    run_sql(totesys_url, "UPDATE sales_order SET agreed_delivery_date = '2024-02-30', last_updated = now() "
            "WHERE sales_order_id = 3")
    run_sql(totesys_url, "UPDATE sales_order SET units_sold = 4242, last_updated = now() "
            "WHERE sales_order_id = 4")
    cities = run_sql(warehouse_url, "SELECT location_id, city FROM dim_location WHERE location_id IN (1, 2) "
                     "ORDER BY 1")
    result = run()
    assert result["rejected"] == {"address": 2, "sales_order": 1}
    assert [row[:3] for row in run_sql(warehouse_url, "SELECT source_table, source_id, column_name "
                                       "FROM etl_rejected_rows ORDER BY 1, 2")] == [
        ["address", 1, "city"], ["address", 2, "city"], ["sales_order", 3, "agreed_delivery_date"]]
    assert run_sql(warehouse_url, "SELECT location_id, city FROM dim_location WHERE location_id IN (1, 2) "
                   "ORDER BY 1") == cities
    assert run_sql(warehouse_url, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 4") \
        == [[4242]]

    run_sql(totesys_url, "UPDATE address SET city = 'Leeds', last_updated = now() WHERE address_id IN (1, 2)")
    run_sql(totesys_url, "UPDATE sales_order SET agreed_delivery_date = '2024-03-01', last_updated = now() "
            "WHERE sales_order_id = 3")
    assert run()["rejected_rows"] == 0
    assert run_sql(warehouse_url, "SELECT city FROM dim_location WHERE location_id IN (1, 2)") \
        == [["Leeds"], ["Leeds"]]
    assert run_sql(warehouse_url, "SELECT agreed_delivery_date::text FROM current_sales_order "
                   "WHERE sales_order_id = 3") == [["2024-03-01"]]


def test_fact_timestamps_outside_the_warehouse_years_are_rejected_and_named():
    from utils.transform.quarantine import split_source_rows
    rows = [sales_order(i) for i in range(1, 6)]
    table = source_table("sales_order", rows).cast(LANDING_SCHEMAS["sales_order"])
    millis = table["created_at"].cast(pa.int64()).to_pylist()
    millis[1:] = [2 ** 63 - 1, -(2 ** 63 - 1), 327_416_976_550_123, -62_135_596_801_000]
    table = table.set_column(1, "created_at", pa.array(millis, pa.int64()).cast(pa.timestamp("ms")))
    good, bad = split_source_rows("sales_order", table)
    assert good["sales_order_id"].to_pylist() == [1]
    assert [(r["source_id"], r["column_name"], r["value"]) for r in bad.to_pylist()] == [
        (2, "created_at", "infinity"), (3, "created_at", "-infinity"),
        (4, "created_at", "12345-06-07 08:09:10.123"), (5, "created_at", "0001-12-31 23:59:59.000 BC")]
    assert set(bad["reason"].to_pylist()) == {"timestamp outside the years 1 to 9999 the warehouse holds"}


@pytest.mark.slow
def test_infinite_and_bc_timestamps_in_totesys_are_quarantined_end_to_end(
        totesys_url, warehouse_url, pipeline_env):
    import ingest
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_sql(totesys_url, "UPDATE sales_order SET created_at = 'infinity' WHERE sales_order_id = 5")
    run_sql(totesys_url, "UPDATE sales_order SET created_at = '0044-03-15 12:00:00 BC' "
            "WHERE sales_order_id = 6")
    result = load.lambda_handler(transform.lambda_handler(ingest.lambda_handler({}, None), None), None)
    assert result["rejected"] == {"sales_order": 2}
    assert run_sql(warehouse_url, "SELECT source_id, value FROM etl_rejected_rows ORDER BY 1") == [
        [5, "infinity"], [6, "0044-03-15 12:00:00.000 BC"]]
    loaded = run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0]
    assert loaded == run_sql(totesys_url, "SELECT count(*) FROM sales_order")[0][0] - 2
