"""`totesys simulate --cancel N` hard-deletes orders, and `totesys run` reports the deletions."""
import pytest

from totesys_local.cli import main
from totesys_local.generator import GeneratorError, simulate
from tests.support.db import run_sql as query

CANCELLED = "sales orders cancelled (deleted)"


def test_simulate_cancels_unpaid_orders_with_their_transaction_and_payment(totesys_url):
    unpaid = "SELECT t.sales_order_id, t.transaction_id, p.payment_id FROM transaction t " \
             "JOIN payment p USING (transaction_id) WHERE t.sales_order_id IS NOT NULL AND NOT p.paid"
    before = {tuple(row) for row in query(totesys_url, unpaid)}
    summary = simulate(totesys_url, minutes=1, seed=3, cancel=2)
    assert summary[CANCELLED] == 2
    orders = {row[0] for row in query(totesys_url, "SELECT sales_order_id FROM sales_order")}
    transactions = {row[0] for row in query(totesys_url, "SELECT transaction_id FROM transaction")}
    payments = {row[0] for row in query(totesys_url, "SELECT payment_id FROM payment")}
    gone = [row for row in before if row[0] not in orders]
    assert len(gone) == 2
    assert all(t not in transactions and p not in payments for _, t, p in gone)
    assert CANCELLED not in simulate(totesys_url, minutes=1, seed=3)


def test_simulate_refuses_a_negative_cancel(totesys_url):
    with pytest.raises(GeneratorError, match="cancel must be a whole number of orders >= 0"):
        simulate(totesys_url, minutes=1, cancel=-1)


def test_run_prints_the_deletions_of_a_cancelled_order(tmp_path, capsys, totesys_url, warehouse_url):
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(tmp_path / "s")]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["simulate", "--target", totesys_url, "--minutes", "1", "--cancel", "1"]) == 0
    assert f"{CANCELLED} 1" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 rows deleted in totesys (" in out and "sales_order 1" in out and "payment 1" in out
    assert "see etl_deleted_rows" in out
    assert query(warehouse_url, "SELECT count(*) FROM etl_deleted_rows")[0][0] == 3
