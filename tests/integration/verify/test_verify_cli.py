"""`totesys verify` as a command: exit 0 / 1 / 2, the table and ids it names, ``--json``; the landing zone
read from the state folder's saved buckets (as `make run` leaves them)."""
import json

import boto3
import pytest

from tests.support.db import connect, run_sql
from totesys_local.cli import main
from totesys_local.local_state import BUCKETS
from utils.aws.objects import list_keys
from utils.db.connection import close_db_connection
from utils.load.rollups import rebuild_rollups


@pytest.fixture
def state_dir(loaded, tmp_path):
    """A state folder holding the loaded pipeline's ingest bucket, as the local runner saves it."""
    _, _, buckets = loaded
    s3 = boto3.client("s3")
    for key in list_keys(s3, buckets["ingest"]):
        path = tmp_path / "s3" / BUCKETS["INGEST_BUCKET"] / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.get_object(Bucket=buckets["ingest"], Key=key)["Body"].read())
    return tmp_path


def verify_cli(loaded, state_dir, *extra):
    source, warehouse, _ = loaded
    return main(["verify", "--source", source, "--warehouse", warehouse, "--state-dir", str(state_dir),
                 *extra])


def test_exit_0_when_every_table_matches_then_1_naming_the_corrupted_row(loaded, state_dir, capsys):
    assert verify_cli(loaded, state_dir) == 0
    out = capsys.readouterr().out
    assert "every table matched" in out and "dim_counterparty" in out

    run_sql(loaded[1], "UPDATE dim_staff SET email_address = 'x@example.com' WHERE staff_id = 1")
    assert verify_cli(loaded, state_dir) == 1
    out = capsys.readouterr().out
    assert "dim_staff differing: ids 1" in out and "MISMATCH" in out


def test_json_for_machines(loaded, state_dir, capsys):
    run_sql(loaded[1], "DELETE FROM fact_payment WHERE payment_id = 1")
    assert verify_cli(loaded, state_dir, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    payment = next(t for t in report["tables"] if t["table"] == "fact_payment")
    assert report["matched"] is False and payment["missing"] == 1 and payment["ids"]["missing"] == [1]


def test_exit_2_when_it_cannot_run(loaded, state_dir, new_database, capsys):
    empty = new_database()
    assert main(["verify", "--source", loaded[0], "--warehouse", empty, "--state-dir", str(state_dir)]) == 2
    assert "run the pipeline first" in capsys.readouterr().err
    # A landing zone that is not there (another state folder): cannot run either, nothing claimed.
    assert verify_cli(loaded, state_dir / "elsewhere") == 2


def test_exit_2_without_databases_or_state(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TOTESYS_SOURCE_URL", raising=False)
    monkeypatch.delenv("TOTESYS_WAREHOUSE_URL", raising=False)
    assert main(["verify", "--state-dir", str(tmp_path)]) == 2
    assert "make run" in capsys.readouterr().err


def test_a_tampered_rollup_row_is_a_mismatch_named_by_its_key_until_the_rollups_are_rebuilt(
        loaded, state_dir, capsys):
    _, warehouse, _ = loaded
    key = run_sql(warehouse, "SELECT created_date::text, currency_id FROM rollup_sales_daily "
                             "ORDER BY 1, 2 LIMIT 1")[0]
    run_sql(warehouse, "UPDATE rollup_sales_daily SET units = units + 1 "
                       "WHERE created_date = CAST(:day AS date) AND currency_id = :currency",
            day=key[0], currency=key[1])

    assert verify_cli(loaded, state_dir) == 1
    out = capsys.readouterr().out
    assert f"rollups: 1 rollup key(s) differ from the current views in rollup_sales_daily: " \
           f"rollup=rollup_sales_daily, created_date={key[0]}, currency_id={key[1]}" in out
    assert "MISMATCH: 1 difference(s) in rollups" in out
    assert verify_cli(loaded, state_dir, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["mismatches"] == 1 and all(t["missing"] + t["differing"] + t["extra"] == 0
                                             for t in report["tables"])
    assert report["rollups"] == {"table": "rollups", "matched": False, "mismatches": 1,
                                 "rollups": ["rollup_sales_daily"],
                                 "keys": [{"rollup": "rollup_sales_daily", "created_date": key[0],
                                           "currency_id": key[1]}]}

    conn = connect(warehouse)
    try:
        conn.run("START TRANSACTION")
        rebuild_rollups(conn)
        conn.run("COMMIT")
    finally:
        close_db_connection(conn)
    assert verify_cli(loaded, state_dir) == 0
    assert "rollups: every dashboard rollup equals the current views" in capsys.readouterr().out


def test_exit_2_when_the_state_folder_belongs_to_other_databases(loaded, state_dir, new_database, capsys):
    """Another folder's landing zone compared with this warehouse would report every fact version as
    never landed and suggest a resync: verify refuses (a folder of another source; a warehouse whose
    ledger names none of the folder's batches), as run and resync do."""
    from totesys_local import folder_identity
    source, warehouse, _ = loaded
    folder_identity.check_databases(state_dir, {"source": new_database(), "warehouse": warehouse},
                                    {"source": False, "warehouse": False}, repoint=False)
    assert verify_cli(loaded, state_dir) == 2
    err = capsys.readouterr().err
    assert "belongs to the source database" in err and "cannot run" in err
    folder_identity.check_databases(state_dir, {"source": source, "warehouse": warehouse},
                                    {"source": False, "warehouse": False}, repoint=True)
    assert verify_cli(loaded, state_dir) == 0

    run_sql(warehouse, "UPDATE etl_load_ledger SET batch_id = 'x' || batch_id")  # loaded by another folder
    assert verify_cli(loaded, state_dir) == 2
    assert "none of them from the landing zone" in capsys.readouterr().err
