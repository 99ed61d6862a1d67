"""Multi-round executions (issue 19): every round in the run summary, `pending` says what still waits in
totesys and how far the warehouse is, and a kill between rounds resumes from the last round saved."""
import json
import os
import subprocess  # nosec B404 - the test runs `totesys run` in a child it kills
import sys
import textwrap

import pytest

from tests.support.db import run_sql
from totesys_local.cli import main
from totesys_local.local_state import BUCKETS

pytestmark = pytest.mark.slow

BOUNDED = ("sales_order", "purchase_order", "transaction", "payment")
CAP = 20_000


def _source_rows(url, tables):
    return sum(run_sql(url, f"SELECT count(*) FROM {table}")[0][0] for table in tables)  # nosec B608


def _ingest_state(state_dir):
    path = state_dir / "s3" / BUCKETS["INGEST_BUCKET"] / "_state" / "ingest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _ingest_manifests(state_dir):
    key, found = _ingest_state(state_dir).get("manifest_key"), []
    while key:
        manifest = json.loads((state_dir / "s3" / BUCKETS["INGEST_BUCKET"] / key).read_text())
        found.append(manifest)
        key = manifest["prev_manifest_key"]
    return found[::-1]


def _table(text, title):
    """{name: rows} of one table of the run summary (the lines after ``title`` up to a blank line)."""
    lines = text.split(title, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
    return {line.split()[0]: int(line.split()[1].replace(",", "")) for line in lines}


def test_a_bounded_execution_reports_every_round_and_the_totals(
        tmp_path, capsys, monkeypatch, totesys_url, warehouse_url):
    monkeypatch.setenv("MAX_BATCH_ROWS", str(CAP))
    state = tmp_path / "state"
    assert main(["run", "--source", totesys_url, "--warehouse", warehouse_url,
                 "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out

    manifests = _ingest_manifests(state)
    assert len(manifests) >= 3
    assert f"rounds: {len(manifests)} " in out
    rounds = [line for line in out.splitlines() if line.strip().startswith("round ")]
    assert len(rounds) == len(manifests)
    for line, manifest in zip(rounds, manifests):
        assert manifest["batch_id"] in line
        assert f"{sum(entry['rows'] for entry in manifest['tables'].values()):,} rows ingested" in line
    ingested = _table(out, "rows ingested")
    from utils.catalog.source import SOURCE_TABLES
    assert ingested["total"] == _source_rows(totesys_url, SOURCE_TABLES)  # every round, not the last one
    loaded = _table(out, "rows loaded")
    assert loaded["fact_payment"] == run_sql(warehouse_url, "SELECT count(*) FROM fact_payment")[0][0]
    assert "more rows wait" not in out


def test_pending_counts_the_rows_waiting_in_totesys_and_the_warehouse_progress(tmp_path, capsys, totesys_url,
                                                                               warehouse_url):
    from totesys_local.generator import simulate
    state = tmp_path / "state"
    urls = ["--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    assert main(["run", *urls]) == 0
    capsys.readouterr()
    versions = "SELECT sales_order_id, last_updated FROM sales_order"
    before = {tuple(row) for row in run_sql(totesys_url, versions)}
    simulate(totesys_url, minutes=60, seed=5)
    changed = len({tuple(row) for row in run_sql(totesys_url, versions)} - before)
    assert changed

    assert main(["pending", *urls]) == 0
    shown = capsys.readouterr().out
    assert "source rows waiting to be ingested:" in shown and f"sales_order {changed:,}" in shown
    orders = run_sql(totesys_url, "SELECT count(*) FROM sales_order")[0][0]
    held = run_sql(warehouse_url, "SELECT count(*) FROM current_sales_order")[0][0]
    assert f"warehouse progress (current rows): {held:,} of {orders:,} sales orders" in shown
    assert "nothing pending" not in shown

    assert main(["run", *urls]) == 0
    capsys.readouterr()
    assert main(["pending", *urls]) == 0
    shown = capsys.readouterr().out
    assert "waiting to be ingested" not in shown and "nothing pending: every batch is loaded" in shown
    assert f"{orders:,} of {orders:,} sales orders" in shown


def test_pending_says_more_waiting_instead_of_nothing_pending(tmp_path, capsys):
    ingest = tmp_path / "s3" / BUCKETS["INGEST_BUCKET"] / "_state"
    ingest.mkdir(parents=True)
    (ingest / "ingest.json").write_text(json.dumps({"manifest_key": None, "more_waiting": True,
                                                    "tables": {}}))
    assert main(["pending", "--state-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "more_waiting: the last ingest cut its batch at MAX_BATCH_ROWS" in shown
    assert "nothing pending" not in shown


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import ingest
    real, calls = ingest.lambda_handler, []

    def die_in_round_3(event, context):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 between rounds 2 and 3
        return real(event, context)

    ingest.lambda_handler = die_in_round_3
    from totesys_local.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_kill_between_rounds_resumes_from_the_last_round_saved(tmp_path, capsys, monkeypatch, totesys_url,
                                                                 warehouse_url):
    state = tmp_path / "state"
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    env = dict(os.environ, MAX_BATCH_ROWS=str(CAP), TOTESYS_DAEMON="off")
    child = subprocess.run([sys.executable, "-c", KILLED_RUN, *args], env=env, capture_output=True,  # nosec
                           text=True, timeout=600)
    assert child.returncode == -9, child.stderr

    # Rounds 1 and 2 were saved as they were loaded: the folder continues from round 2.
    saved = _ingest_manifests(state)
    assert len(saved) == 2 and _ingest_state(state)["more_waiting"] is True
    loaded = sorted(row[0] for row in run_sql(warehouse_url, "SELECT batch_id FROM etl_load_ledger"))
    assert loaded == sorted(manifest["batch_id"] for manifest in saved)

    monkeypatch.setenv("MAX_BATCH_ROWS", str(CAP))
    assert main(args) == 0
    out = capsys.readouterr().out
    manifests = _ingest_manifests(state)
    assert manifests[:2] == saved and len(manifests) > 2  # round 1 was not run again
    assert f"rounds: {len(manifests) - 2} " in out or len(manifests) == 3
    assert run_sql(warehouse_url, "SELECT count(*) FROM etl_load_ledger")[0][0] == len(manifests)
    for table in ("sales_order", "purchase_order", "payment"):
        assert run_sql(warehouse_url, f"SELECT count(*) FROM current_{table}") == \
            run_sql(totesys_url, f"SELECT count(*) FROM {table}")  # nosec B608 - fixed names


def test_a_round_whose_state_cannot_be_saved_fails_the_run_clearly(
        tmp_path, capsys, monkeypatch, totesys_url, warehouse_url):
    from totesys_local import rounds

    def full_disk(s3_dir):
        raise OSError(28, "No space left on device")

    real = rounds.save_buckets
    monkeypatch.setattr(rounds, "save_buckets", full_disk)
    state = tmp_path / "state"
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1
    assert "stage load" in err and "the batch loaded, but the state folder could not be saved" in err
    assert "No space left on device" in err
    # the execution's end still saved what it wrote: the next run goes on from there
    monkeypatch.setattr(rounds, "save_buckets", real)
    assert main(args) == 0
    assert run_sql(warehouse_url, "SELECT count(*) FROM current_payment") == \
        run_sql(totesys_url, "SELECT count(*) FROM payment")
