"""The project's own PostgreSQL: found, started, reused, stopped and removed."""
import json
import os

import pytest

from totesys_local import cluster as pg


def test_find_bindir_finds_server_binaries():
    bindir = pg.find_bindir()
    for name in ("initdb", "pg_ctl", "postgres"):
        assert os.access(os.path.join(bindir, name), os.X_OK)


def test_find_bindir_honours_explicit_setting(monkeypatch):
    real = pg.find_bindir()
    monkeypatch.setenv("TOTESYS_PG_BINDIR", real)
    assert pg.find_bindir() == real


def test_no_binaries_anywhere_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TOTESYS_PG_BINDIR", raising=False)
    monkeypatch.setattr(pg.shutil, "which", lambda name: None)
    monkeypatch.setattr(pg.glob, "glob", lambda pattern: [])
    monkeypatch.setitem(__import__("sys").modules, "pgserver", None)
    with pytest.raises(pg.ClusterError, match="no PostgreSQL server binaries found"):
        pg.find_bindir()


def test_temporary_cluster_lifecycle():
    cluster = pg.temporary_cluster()
    try:
        conn = cluster.connect()
        assert conn.run("SELECT current_setting('listen_addresses')") == [["127.0.0.1"]]
        conn.close()
        cluster.create_database("made_here")
        assert cluster.connect("made_here").run("SELECT 1") == [[1]]
        cluster.drop_database("made_here")
    finally:
        cluster.destroy()
    assert not os.path.exists(cluster.info.datadir)
    assert not cluster.is_running()
    cluster.stop()  # stopping a removed cluster is harmless


def test_wrong_password_is_refused():
    cluster = pg.temporary_cluster()
    real_password = cluster.info.password
    try:
        cluster.info.password = "not-the-password"
        assert not cluster.is_running()  # scram auth is on: a wrong password cannot connect
        cluster.info.password = real_password
        assert cluster.is_running()
    finally:
        cluster.info.password = real_password
        cluster.destroy()


def test_local_cluster_is_persisted_reused_and_stopped(tmp_path):
    state_dir = tmp_path / "state"
    first = pg.local_cluster(state_dir)
    try:
        record = json.loads((state_dir / "cluster.json").read_text())
        assert record["port"] == first.info.port
        assert oct((state_dir / "cluster.json").stat().st_mode & 0o777) == "0o600"
        again = pg.local_cluster(state_dir)  # running: reused as is
        assert again.info.port == first.info.port
        assert pg.stop_local_cluster(state_dir) is True
        assert not first.is_running()
        restarted = pg.local_cluster(state_dir)  # stopped: started again, same data
        assert restarted.is_running()
        assert restarted.info.datadir == first.info.datadir
    finally:
        pg.stop_local_cluster(state_dir)
    assert pg.stop_local_cluster(state_dir) is False
    assert pg.stop_local_cluster(tmp_path / "never") is False
    first.destroy()


def test_with_database_swaps_only_the_name():
    url = "postgresql://u:p@h:1/postgres"
    assert pg.with_database(url, "wh") == "postgresql://u:p@h:1/wh"


def test_pgserver_binaries_are_the_last_resort(monkeypatch):
    import pgserver  # in requirements-dev.txt
    monkeypatch.delenv("TOTESYS_PG_BINDIR", raising=False)
    monkeypatch.setattr(pg.shutil, "which", lambda name: None)
    monkeypatch.setattr(pg.glob, "glob", lambda pattern: [])
    bindir = pg.find_bindir()
    assert bindir.startswith(os.path.dirname(pgserver.__file__))
