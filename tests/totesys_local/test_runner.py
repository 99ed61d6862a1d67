"""`totesys run` end to end: real PostgreSQL, the real state machine in moto, state persisted on disk."""
import json
import shutil

import pytest

from totesys_local.cli import main
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url, describe_url
from tests.support.db import run_sql
from tests.support.ingest_mode import cdc_session

# Several seconds each (the state machine, a local run or a generated warehouse): not in make test-fast.
pytestmark = pytest.mark.slow


def _files(state_dir):
    return sorted(p.relative_to(state_dir).as_posix() for p in (state_dir / "s3").rglob("*") if p.is_file())


def test_full_then_incremental_then_empty_run(tmp_path, capsys, totesys_url, warehouse_url):
    from totesys_local.generator import simulate
    state = tmp_path / "state"
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]

    assert main(args) == 0
    first = capsys.readouterr().out
    assert "[1/3] ingest" in first and "[3/3] load" in first and "rows loaded" in first
    assert "batch bounds" in first and "psql" in first
    sales = run_sql(totesys_url, "SELECT count(*) FROM sales_order")[0][0]
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0] == sales
    assert any(f.startswith("s3/totesys-local-ingest/_state/") for f in _files(state))

    versions_sql = "SELECT sales_order_id, last_updated FROM sales_order"
    before = {tuple(row) for row in run_sql(totesys_url, versions_sql)}
    simulate(totesys_url, minutes=30, seed=7)
    changed = len({tuple(row) for row in run_sql(totesys_url, versions_sql)} - before)
    assert changed > 0
    assert main(args) == 0
    second = capsys.readouterr().out
    ingested = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in
                second.split("rows ingested")[1].split("rows loaded")[0].strip().splitlines()[1:]}
    assert 0 < ingested["total"] < 1000  # only the changes, not the whole database
    # every changed order adds exactly one fact row (a new version), nothing else is reloaded
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0] == sales + changed

    files_before = _files(state)
    assert main(args) == 0
    third = capsys.readouterr().out
    assert "nothing new" in third and "rows ingested" not in third
    assert [f for f in _files(state) if "_state/" not in f] == [f for f in files_before if "_state/" not in f]


def test_failed_run_keeps_its_batches_pending_and_retry_loads_them(tmp_path, capsys, totesys_url,
                                                                   warehouse_url):
    """Warehouse down: the run fails in load, what ingest and transform wrote is kept (as S3 keeps
    it), `pending` shows the batch and the error; warehouse back: `retry` loads it, nothing pends."""
    from totesys_local.cluster import free_port
    from totesys_local.generator import simulate
    state = tmp_path / "state"
    dead = credentials_from_url(warehouse_url)
    down = f"postgresql://{dead['user']}:secret-pw@127.0.0.1:{free_port()}/nowhere"
    code = main(["run", "--source", totesys_url, "--warehouse", down, "--state-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 1
    assert "FAILED" in err and "stage load" in err and "DatabaseUnavailableError" in err
    assert "secret-pw" not in err and "totesys pending" in err
    assert any("/_batches/" in f for f in _files(state))  # kept, like S3 keeps a failed run's objects
    last_error = json.loads((state / "last_error.json").read_text())
    assert last_error["stage"] == "load" and last_error["error_type"] == "DatabaseUnavailableError"

    assert main(["pending", "--warehouse", warehouse_url, "--state-dir", str(state)]) == 0
    shown = capsys.readouterr().out
    assert "ingest batches not yet transformed: 0" in shown
    assert "processed batches not yet loaded into" in shown and ": 1\n" in shown
    assert "last failed run" in shown and "stage load: DatabaseUnavailableError" in shown
    assert dead["password"] not in shown

    simulate(totesys_url, minutes=10, seed=3)  # retried whether or not totesys changed meanwhile
    assert main(["retry", "--source", totesys_url, "--warehouse", warehouse_url,
                 "--state-dir", str(state)]) == 0
    retried = capsys.readouterr().out
    assert "retrying:" in retried and "last failed run" in retried
    assert "2 batch(es) loaded" in retried
    assert not (state / "last_error.json").exists()
    for source, target in (("sales_order", "fact_sales_order"), ("payment", "fact_payment")):
        versions = run_sql(totesys_url, f"SELECT count(*) FROM {source}")[0][0]  # nosec B608 - fixed
        assert run_sql(warehouse_url, f"SELECT count(*) FROM current_{source}")[0][0] == versions  # nosec
        assert run_sql(warehouse_url, f"SELECT count(DISTINCT {source}_id) FROM {target}")[0][0] \
            == versions  # nosec B608 - fixed names

    assert main(["pending", "--warehouse", warehouse_url, "--state-dir", str(state)]) == 0
    assert "nothing pending" in capsys.readouterr().out


def test_concurrent_runs_on_one_state_dir_are_refused(tmp_path, capsys, totesys_url, warehouse_url):
    import fcntl
    state = tmp_path / "state"
    state.mkdir()
    with open(state / "run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code = main(["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)])
    assert code == 1
    assert "another totesys run" in capsys.readouterr().err


def test_embedded_defaults_seed_once_and_stop(tmp_path, capsys, monkeypatch):
    state = tmp_path / "embedded"
    try:
        assert main(["run", "--state-dir", str(state)]) == 0
        out = capsys.readouterr().out
        assert "seeded the embedded totesys at scale 1" in out
        assert "make psql" in out
        record = json.loads((state / "cluster.json").read_text())
        assert record["password"] not in out
        assert main(["simulate", "--minutes", "5", "--state-dir", str(state)]) == 0
        assert main(["run", "--state-dir", str(state)]) == 0
        again = capsys.readouterr().out
        assert "seeded" not in again and "rows loaded" in again
    finally:
        assert main(["stop", "--state-dir", str(state)]) == 0
    assert "stopped" in capsys.readouterr().out
    assert main(["stop", "--state-dir", str(state)]) == 0
    assert "was not running" in capsys.readouterr().out
    # As root the data folder may live outside the state folder (cluster.py): remove it too.
    shutil.rmtree(json.loads((state / "cluster.json").read_text())["datadir"], ignore_errors=True)


def test_psql_and_simulate_need_an_embedded_cluster(tmp_path, capsys):
    assert main(["psql", "--state-dir", str(tmp_path)]) == 1
    assert "run `make run` first" in capsys.readouterr().err
    assert main(["simulate", "--minutes", "5", "--state-dir", str(tmp_path)]) == 1
    assert "run `make run` first" in capsys.readouterr().err


@pytest.mark.parametrize("url, shown", [
    ("postgresql://ann:pw@db:5433/tote", "postgresql://ann@db:5433/tote"),
    ("postgresql://db/tote", "postgresql://db:5432/tote"),
])
def test_urls_are_shown_without_passwords(url, shown):
    assert describe_url(url) == shown


def test_run_into_an_existing_spec_warehouse_with_the_line2_spelling(
        tmp_path, capsys, totesys_url, warehouse_url):
    """A warehouse that already holds the SPEC tables (no ledger, indexes or views yet) and spells
    one column counterparty_legal_address_line2, as some real warehouses do."""
    from utils.catalog.warehouse import warehouse_ddl
    spec_tables = warehouse_ddl().split("-- One fact row")[0].replace(
        "counterparty_legal_address_line_2", "counterparty_legal_address_line2")
    conn = connect_to_db(credentials=credentials_from_url(warehouse_url))
    conn.run(spec_tables)
    close_db_connection(conn)

    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(tmp_path)]
    assert main(args) == 0, capsys.readouterr().err
    expected = run_sql(totesys_url, "SELECT count(*) FROM counterparty c JOIN address a "
                       "ON a.address_id = c.legal_address_id WHERE a.address_line_2 IS NOT NULL")
    loaded = run_sql(warehouse_url, "SELECT count(*) FROM dim_counterparty "
                     "WHERE counterparty_legal_address_line2 IS NOT NULL")
    assert loaded == expected and loaded[0][0] > 0
    assert run_sql(warehouse_url, "SELECT count(*) FROM current_payment") == \
        run_sql(totesys_url, "SELECT count(*) FROM payment")


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even the CLI's error handling."""


@pytest.mark.parametrize("pointers_saved", [0, 1])
def test_a_kill_while_saving_state_leaves_a_state_the_next_run_continues(
        tmp_path, capsys, monkeypatch, totesys_url, warehouse_url, pointers_saved):
    """Killed while saving, just before the first state pointer or just after it: the next run
    succeeds and the warehouse reconciles with the source. (Saved in listing order, a pointer came
    before the data it names, and the folder was wedged: CorruptFileError ... NoSuchKey.)"""
    import os

    from totesys_local.generator import simulate
    state = tmp_path / "state"
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    assert main(args) == 0
    simulate(totesys_url, minutes=30, seed=11)

    real_replace, saved = os.replace, []

    def replace_then_die(source, target):
        # Die at the first state pointer, or at the first file of any kind after one was saved.
        is_pointer = "/_state/" in str(target)
        if (is_pointer and not pointers_saved) or (pointers_saved and saved):
            raise Killed()
        real_replace(source, target)
        if is_pointer:
            saved.append(target)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        main(args)
    monkeypatch.setattr(os, "replace", real_replace)
    capsys.readouterr()
    simulate(totesys_url, minutes=10, seed=12)  # so the next run transforms (and reads) again

    assert main(args) == 0, capsys.readouterr().err
    assert main(args) == 0, capsys.readouterr().err
    for source, target in (("sales_order", "fact_sales_order"), ("purchase_order", "fact_purchase_order"),
                           ("payment", "fact_payment")):
        versions = run_sql(totesys_url, f"SELECT count(*) FROM {source}")[0][0]  # nosec B608 - fixed names
        assert run_sql(warehouse_url, f"SELECT count(*) FROM current_{source}")[0][0] == versions  # nosec
        loaded = run_sql(warehouse_url, f"SELECT count(*), count(DISTINCT ({source}_id, last_updated_date, "
                         f"last_updated_time)) FROM {target}")[0]  # nosec B608 - fixed names
        assert loaded[0] == loaded[1]  # no version loaded twice


def _role(admin_url, name, password):
    """A login role with a password that may read every totesys table (and, in make test-cdc, replicate)."""
    replication = " REPLICATION" if cdc_session() else ""
    run_sql(admin_url, f"CREATE ROLE {name} LOGIN{replication} PASSWORD '{password}'")  # nosec B608


def _grant_read(url, role):
    run_sql(url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")  # nosec B608 - test names


def test_source_url_without_password_uses_pgpassword(tmp_path, capsys, monkeypatch, pg_admin_url,
                                                     totesys_url, warehouse_url):
    import uuid
    role = f"etl_{uuid.uuid4().hex[:8]}"
    _role(pg_admin_url, role, "from-env-9")
    _grant_read(totesys_url, role)
    parts = credentials_from_url(totesys_url)
    source = f"postgresql://{role}@{parts['host']}:{parts['port']}/{parts['database']}"
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.setenv("PGPASSWORD", "from-env-9")
    # the URLs come from the environment (flags would win)
    monkeypatch.setenv("TOTESYS_SOURCE_URL", source)
    monkeypatch.setenv("TOTESYS_WAREHOUSE_URL", warehouse_url)
    assert main(["run", "--state-dir", str(tmp_path / "state")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"source    {describe_url(source)}" in out and "rows loaded" in out
    assert "from-env-9" not in out
    sales = run_sql(totesys_url, "SELECT count(*) FROM sales_order")[0][0]
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0] == sales


def test_source_url_without_any_password_is_a_clear_error(tmp_path, capsys, monkeypatch, pg_admin_url,
                                                          totesys_url, warehouse_url):
    import uuid
    role = f"etl_{uuid.uuid4().hex[:8]}"
    _role(pg_admin_url, role, "never-shown-7")
    parts = credentials_from_url(totesys_url)
    source = f"postgresql://{role}@{parts['host']}:{parts['port']}/{parts['database']}"
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("TOTESYS_SOURCE_URL", "postgresql://flags-win@nowhere/x")
    code = main(["run", "--source", source, "--warehouse", warehouse_url, "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"source database {describe_url(source)}" in err
    assert "no password was given" in err and "PGPASSWORD" in err and ".pgpass" in err
    assert not (tmp_path / "s3").exists()  # refused before anything ran


def test_url_errors_never_show_the_password(tmp_path, capsys):
    code = main(["run", "--source", "postgresql://ann:hunter2@db:notaport/tote",
                 "--warehouse", "postgresql://ann:hunter2@db/w", "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "postgresql://ann@db:notaport/tote" in err and "hunter2" not in err


def test_summary_reads_the_optional_contract_keys():
    """Rejected rows, ignored columns and the source time zone are printed when the stages report
    them, and the summary still prints when they do not."""
    from totesys_local.runner import _batch_bounds, print_summary
    manifest = {"batch_time": "2024-11-26 15:00:00.000000", "timezone": "America/New_York",
                "tables": {"sales_order": {"key": "k", "low": "2024-11-26 09:00:00",
                                           "high": "2024-11-26 10:00:00"},
                           "payment": {"key": "k2", "low": "2024-11-26 08:30:00",
                                       "high": "2024-11-26 10:00:00"}}}
    summary = {"ingested": {"sales_order": 3}, "loaded": {"fact_sales_order": 2}, "batches": ["b1"],
               "rejected_rows": 1, "rejected": {"sales_order": 1},
               "ignored_columns": {"sales_order": ["discount"]}, "seconds": {"ingest": 1.0},
               "elapsed": 2.0, "bounds": _batch_bounds(manifest), "log": "l.jsonl"}
    lines = []
    print_summary(summary, "psql", out=lines.append)
    text = "\n".join(lines)
    assert "1 rows rejected (quarantined) (sales_order 1): see etl_rejected_rows" in text
    assert "columns ignored in sales_order" in text and "discount" in text
    assert ("batch bounds: from 2024-11-26 08:30:00 to 2024-11-26 10:00:00 "
            "(source time, America/New_York)") in text

    del manifest["timezone"]
    for entry in manifest["tables"].values():
        del entry["high"]
    quiet = {"ingested": {}, "loaded": {}, "seconds": {}, "elapsed": 0.1,
             "bounds": _batch_bounds(manifest), "log": "l.jsonl"}
    lines.clear()
    print_summary(quiet, "psql", out=lines.append)
    text = "\n".join(lines)
    assert "nothing new" in text and "rejected" not in text and "ignored" not in text
    assert "to 2024-11-26 15:00:00.000000 (source time, UTC)" in text


def test_pending_batches_loaded_in_between_no_changes_runs_are_reported(tmp_path):
    """A run whose ingest found nothing but whose load loaded pending batches says so."""
    from totesys_local.runner import print_summary
    lines = []
    print_summary({"ingested": {}, "loaded": {"fact_payment": 4}, "batches": ["b1", "b2"], "seconds": {},
                   "elapsed": 1.0, "bounds": None, "log": "l"}, "psql", out=lines.append)
    assert any("loaded 2 pending batch(es): b1, b2" in line for line in lines)
    assert not any("nothing new" in line for line in lines)
