"""`totesys run` end to end: real PostgreSQL, the real state machine in moto, state persisted on disk."""
import json

import pytest

from totesys_local.cli import main
from totesys_local.runner import describe_url
from tests.dbutil import run_sql as _query
from utils.db_connections import close_db_connection, connect_to_db, credentials_from_url


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
    sales = _query(totesys_url, "SELECT count(*) FROM sales_order")[0][0]
    assert _query(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0] == sales
    assert any(f.startswith("s3/totesys-local-ingest/_state/") for f in _files(state))

    versions_sql = "SELECT sales_order_id, last_updated FROM sales_order"
    before = {tuple(row) for row in _query(totesys_url, versions_sql)}
    simulate(totesys_url, minutes=30, seed=7)
    changed = len({tuple(row) for row in _query(totesys_url, versions_sql)} - before)
    assert changed > 0
    assert main(args) == 0
    second = capsys.readouterr().out
    ingested = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in
                second.split("rows ingested")[1].split("rows loaded")[0].strip().splitlines()[1:]}
    assert 0 < ingested["total"] < 1000  # only the changes, not the whole database
    # every changed order adds exactly one fact row (a new version), nothing else is reloaded
    assert _query(warehouse_url, "SELECT count(*) FROM fact_sales_order")[0][0] == sales + changed

    files_before = _files(state)
    assert main(args) == 0
    third = capsys.readouterr().out
    assert "no changes" in third and "nothing new" in third
    assert [f for f in _files(state) if "_state/" not in f] == [f for f in files_before if "_state/" not in f]


def test_failed_run_exits_non_zero_and_changes_nothing(tmp_path, capsys, totesys_url, warehouse_url):
    from totesys_local.cluster import free_port
    state = tmp_path / "state"
    dead = credentials_from_url(warehouse_url)
    bad_warehouse = f"postgresql://{dead['user']}:secret-pw@127.0.0.1:{free_port()}/nowhere"
    code = main(["run", "--source", totesys_url, "--warehouse", bad_warehouse, "--state-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 1
    assert "FAILED" in err and "stage load" in err and "DatabaseUnavailableError" in err
    assert "secret-pw" not in err
    assert not (state / "s3").exists() or _files(state) == []  # a failed run persists nothing


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
    from pathlib import Path
    ddl = Path(__file__).resolve().parents[2].joinpath("sql", "warehouse_schema.sql").read_text()
    spec_tables = ddl.split("-- One fact row")[0].replace(
        "counterparty_legal_address_line_2", "counterparty_legal_address_line2")
    conn = connect_to_db(credentials=credentials_from_url(warehouse_url))
    conn.run(spec_tables)
    close_db_connection(conn)

    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(tmp_path)]
    assert main(args) == 0, capsys.readouterr().err
    expected = _query(totesys_url, "SELECT count(*) FROM counterparty c JOIN address a "
                                   "ON a.address_id = c.legal_address_id WHERE a.address_line_2 IS NOT NULL")
    loaded = _query(warehouse_url, "SELECT count(*) FROM dim_counterparty "
                                   "WHERE counterparty_legal_address_line2 IS NOT NULL")
    assert loaded == expected and loaded[0][0] > 0
    assert _query(warehouse_url, "SELECT count(*) FROM current_payment") == \
        _query(totesys_url, "SELECT count(*) FROM payment")
