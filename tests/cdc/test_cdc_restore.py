"""A restore from a backup in CDC mode (tests/test_backdated_and_future_rows.py's cursor case): the TRUNCATE
is refused (the run fails naming the table and the LSN, nothing lands, the slot stays where it was), a
re-sync of the table takes a fresh snapshot whose deletions wait for approval as in cursor mode, and the
restored rows and a back-dated new id then reconcile exactly. The small totesys of tests/support/totesys.py,
real PostgreSQL, moto."""
import pytest

import ingest
from tests.cdc.conftest import assert_warehouse_exact, slot_row
from tests.support.db import run_sql
from tests.support.pipeline import run_pipeline
from utils.ingest.cdc.decode import CdcDecodeError

pytestmark = pytest.mark.slow

ORDER_COLUMNS = ("created_at, design_id, staff_id, counterparty_id, units_sold, unit_price, currency_id, "
                 "agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id")
OPEN_DELETIONS = "SELECT count(*) FROM etl_deleted_rows WHERE reinserted_batch_id IS NULL"


def test_a_truncate_is_refused_then_a_resync_and_the_restore_reconcile_exactly(
        source_url, warehouse_url, pipeline_env, cdc_mode):
    source, warehouse, slot = source_url, warehouse_url, cdc_mode
    pipeline_env(source_url=source, warehouse_url=warehouse)
    run_pipeline()
    total = run_sql(source, "SELECT count(*) FROM payment")[0][0]
    run_sql(source, "CREATE TABLE payment_backup AS SELECT * FROM payment")
    run_sql(source, "TRUNCATE payment")
    before = slot_row(source, slot)
    with pytest.raises(CdcDecodeError, match=r"payment at LSN .*TRUNCATE.*resync --tables payment"):
        ingest.lambda_handler({}, None)
    assert slot_row(source, slot) == before

    held = run_pipeline({"resync": ["payment"]})  # a table emptied: its deletions wait for approval
    assert "payment" not in held.get("deleted", {})
    assert run_pipeline({"approve_deletes": ["payment"]})["deleted"] == {"payment": total}
    assert run_sql(warehouse, "SELECT count(*) FROM current_payment") == [[0]]

    run_sql(source, "INSERT INTO payment SELECT * FROM payment_backup")  # every original stamp kept
    run_sql(source, f"INSERT INTO sales_order (sales_order_id, last_updated, {ORDER_COLUMNS}) "  # nosec B608
                    f"SELECT 999999, '2023-01-01', {ORDER_COLUMNS} FROM sales_order WHERE sales_order_id = 1")
    result = run_pipeline()
    assert result["tables"]["fact_sales_order"] == 1
    assert_warehouse_exact(source, warehouse)
    assert run_sql(warehouse, OPEN_DELETIONS) == [[0]]
