"""The reliability cases, in both ingest modes: a late commit, deletes and a re-insert, a back-dated new
row and a value the warehouse cannot hold leave the warehouse exact whichever mode reads the changes."""
import pytest

from tests.support.cdc import assert_warehouse_exact
from tests.support.db import connect, run_sql
from tests.support.pipeline import run_pipeline

pytestmark = pytest.mark.slow

ORDER_COLUMNS = ("created_at, design_id, staff_id, counterparty_id, units_sold, unit_price, currency_id, "
                 "agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id")


@pytest.fixture(params=["cursor", "cdc"])
def loaded(request, totesys_url, warehouse_url, pipeline_env, monkeypatch):
    """Scale-1 totesys loaded once in the mode of the parameter; returns (source, warehouse)."""
    monkeypatch.setenv("INGEST_MODE", request.param)
    monkeypatch.setenv("CDC_SLOT_NAME", f"t_rel_{totesys_url.rsplit('/', 1)[1]}")
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    run_pipeline()
    return totesys_url, warehouse_url


def test_late_commits_deletes_reinserts_backdated_rows_and_bad_values_keep_the_warehouse_exact(loaded):
    source, warehouse = loaded
    late = connect(source)
    try:
        late.run("START TRANSACTION")
        late.run("UPDATE payment SET paid = NOT paid, last_updated = localtimestamp WHERE payment_id = 6")
        run_sql(source, "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp "
                        "WHERE payment_id = 7")
        run_pipeline()  # the late transaction is still open: its row is not visible yet
        late.run("COMMIT")
    finally:
        late.close()
    run_pipeline()
    assert_warehouse_exact(source, warehouse)

    run_sql(source, "CREATE TABLE payment_keep AS SELECT * FROM payment WHERE payment_id IN (8, 9)")
    run_sql(source, "DELETE FROM payment WHERE payment_id IN (8, 9)")
    assert run_pipeline()["deleted"] == {"payment": 2}
    assert_warehouse_exact(source, warehouse)

    run_sql(source, "INSERT INTO payment SELECT * FROM payment_keep WHERE payment_id = 8")  # re-inserted
    run_sql(source, f"INSERT INTO sales_order (sales_order_id, last_updated, {ORDER_COLUMNS}) "  # nosec B608
                    f"SELECT 999999, '2023-01-01', {ORDER_COLUMNS} FROM sales_order WHERE sales_order_id = 1")
    run_sql(source, "UPDATE sales_order SET created_at = 'infinity', last_updated = localtimestamp "
                    "WHERE sales_order_id = 3")
    result = run_pipeline()
    assert result["rejected_rows"] == 1
    run_sql(source, "UPDATE sales_order SET created_at = '2023-01-01', last_updated = localtimestamp "
                    "WHERE sales_order_id = 3")  # the fix loads
    run_pipeline()
    assert_warehouse_exact(source, warehouse)
    assert run_sql(warehouse, "SELECT count(*) FROM etl_deleted_rows WHERE reinserted_batch_id IS NULL") \
        == [[1]]
