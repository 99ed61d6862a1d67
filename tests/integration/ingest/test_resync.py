"""`resync`: a back-dated update no cursor sees is reported by verify and repaired by a re-sync."""
import pytest

import ingest

from tests.support.db import run_sql
from tests.support.pipeline import run_pipeline
from utils.errors import InvalidEventError, UnknownTableError


def by_table(report):
    return {table.table: table for table in report.tables}


@pytest.mark.cursor_only("the cursor does not see an update stamped below its window; CDC lands it, "
                         "so there is no gap for verify to report and resync to repair")
def test_a_back_dated_update_is_reported_by_verify_and_repaired_by_resync(loaded, check):
    source, warehouse, buckets = loaded
    # Stamped below the next run's window (rows were stamped a day ago; the window starts an hour before
    # the last run) but after the row's previous version.
    run_sql(source, "UPDATE sales_order SET units_sold = 12345, last_updated = last_updated + "
                    "interval '1 hour' WHERE sales_order_id = 2")
    run_sql(source, "UPDATE address SET city = 'Wakefield', last_updated = last_updated + "
                    "interval '1 hour' WHERE address_id = 1")
    assert run_pipeline()["batches"] == []  # the cursor does not see them

    report = check(source, warehouse, buckets["ingest"])
    assert report.exit_code == 1
    tables = by_table(report)
    assert tables["fact_sales_order"].ids["differing"] == [2]
    assert tables["dim_location"].ids["differing"] == [1]
    assert tables["dim_counterparty"].ids["differing"] == [1]

    result = run_pipeline({"resync": ["sales_order", "address"]})

    assert len(result["batches"]) == 1
    repaired = check(source, warehouse, buckets["ingest"])
    assert repaired.exit_code == 0, repaired.to_dict()
    # The new version is appended; the history keeps the old one; nothing else was appended twice.
    assert run_sql(warehouse, "SELECT units_sold FROM fact_sales_order WHERE sales_order_id = 2 "
                              "ORDER BY last_updated_time") == [[99973], [12345]]
    assert run_sql(warehouse, "SELECT count(*) FROM fact_sales_order")[0][0] == 3
    current = run_sql(warehouse, "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 2")
    assert current == [[12345]]
    assert run_sql(warehouse, "SELECT counterparty_legal_city FROM dim_counterparty") == [["Wakefield"]]


def test_an_update_stamped_before_the_current_version_becomes_current_after_resync(loaded, check):
    """docs/RELIABILITY.md defect 3: an update stamped earlier than the row's current version is the
    source's current state once a batch brings it: the current view and the dimensions take it."""
    source, warehouse, buckets = loaded
    run_sql(source, "UPDATE sales_order SET units_sold = 777, last_updated = '2023-01-01' "
                    "WHERE sales_order_id = 2")
    run_sql(source, "UPDATE address SET city = 'Wakefield', last_updated = '2023-01-01' WHERE address_id = 1")
    assert check(source, warehouse, buckets["ingest"]).exit_code == 1

    run_pipeline({"resync": ["sales_order", "address"]})

    repaired = check(source, warehouse, buckets["ingest"])
    assert repaired.exit_code == 0, repaired.to_dict()  # the rollups included
    current = "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 2"
    assert run_sql(warehouse, current) == [[777]]
    assert sorted(row[0] for row in run_sql(
        warehouse, "SELECT units_sold FROM fact_sales_order WHERE sales_order_id = 2")) == [777, 99973]
    assert run_sql(warehouse, "SELECT city FROM dim_location WHERE location_id = 1") == [["Wakefield"]]
    assert run_sql(warehouse, "SELECT counterparty_legal_city FROM dim_counterparty") == [["Wakefield"]]


@pytest.mark.cursor_only("the cursor does not see an update stamped below its window; CDC lands it, "
                         "so there is no gap for verify to report and resync to repair")
def test_an_overwrite_restore_to_an_earlier_version_becomes_current_after_resync(loaded, check):
    """docs/RELIABILITY.md defect 3: a row restored from a backup to a version the warehouse holds loads
    no fact row (the version is held), but that version must become current again."""
    source, warehouse, buckets = loaded
    units, stamp = run_sql(source, "SELECT units_sold, last_updated FROM sales_order "
                                   "WHERE sales_order_id = 2")[0]
    city, city_stamp = run_sql(source, "SELECT city, last_updated FROM address WHERE address_id = 1")[0]
    run_sql(source, "UPDATE sales_order SET units_sold = 5555, last_updated = localtimestamp "
                    "WHERE sales_order_id = 2")
    run_sql(source, "UPDATE address SET city = 'Wakefield', last_updated = localtimestamp "
                    "WHERE address_id = 1")
    assert len(run_pipeline()["batches"]) == 1
    current = "SELECT units_sold FROM current_sales_order WHERE sales_order_id = 2"
    assert run_sql(warehouse, current) == [[5555]]
    # The restore: the earlier rows, their stamps included (below the cursor's window).
    run_sql(source, "UPDATE sales_order SET units_sold = :units, last_updated = :stamp "
                    "WHERE sales_order_id = 2", units=units, stamp=stamp)
    run_sql(source, "UPDATE address SET city = :city, last_updated = :stamp WHERE address_id = 1",
            city=city, stamp=city_stamp)
    assert run_pipeline()["batches"] == []
    assert check(source, warehouse, buckets["ingest"]).exit_code == 1

    result = run_pipeline({"resync": ["sales_order", "address"]})

    assert result["tables"].get("fact_sales_order", 0) == 0  # the version is held: nothing appended
    repaired = check(source, warehouse, buckets["ingest"])
    assert repaired.exit_code == 0, repaired.to_dict()  # the rollups counted the re-marked order
    assert run_sql(warehouse, current) == [[units]]
    assert run_sql(warehouse, "SELECT count(*) FROM fact_sales_order WHERE sales_order_id = 2") == [[2]]
    assert run_sql(warehouse, "SELECT counterparty_legal_city FROM dim_counterparty") == [[city]]
    # The next resync brings the same version again: it is current, nothing is written.
    before = run_sql(warehouse, "SELECT * FROM fact_sales_order ORDER BY sales_record_id")
    run_pipeline({"resync": ["sales_order"]})
    assert run_sql(warehouse, "SELECT * FROM fact_sales_order ORDER BY sales_record_id") == before


def test_a_resync_of_an_unchanged_table_changes_nothing(loaded, check):
    source, warehouse, buckets = loaded
    before = run_sql(warehouse, "SELECT * FROM fact_payment ORDER BY payment_record_id")
    run_pipeline({"resync": ["payment"]})
    assert run_sql(warehouse, "SELECT * FROM fact_payment ORDER BY payment_record_id") == before
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0


def test_a_resync_also_records_the_tables_deletions(loaded, check):
    source, warehouse, buckets = loaded
    run_sql(source, "DELETE FROM payment WHERE payment_id = 1")
    run_pipeline({"resync": ["payment"], "approve_deletes": ["payment"]})
    assert run_sql(warehouse, "SELECT source_table, source_id FROM etl_deleted_rows") == [["payment", 1]]
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0


@pytest.mark.parametrize("event, error", [({"resync": []}, InvalidEventError),
                                          ({"resync": "sales_order"}, InvalidEventError),
                                          ({"resync": ["sales_order", "_prisma_migrations"]},
                                           UnknownTableError)])
def test_a_bad_resync_request_is_refused_before_anything_lands(env, event, error):
    s3, bucket, _ = env
    with pytest.raises(error):
        ingest.lambda_handler(event, None)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_a_resync_reads_its_tables_even_outside_tables_to_query(loaded, check):
    source, warehouse, buckets = loaded
    run_sql(source, "UPDATE design SET file_name = 'oak.json', "
                    "last_updated = last_updated + interval '1 hour'")
    run_pipeline({"tables_to_query": ["currency"], "resync": ["design"]})
    assert run_sql(warehouse, "SELECT file_name FROM dim_design") == [["oak.json"]]
    assert check(source, warehouse, buckets["ingest"]).exit_code == 0
