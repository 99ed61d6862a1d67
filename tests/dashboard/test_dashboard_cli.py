"""`totesys dashboard`: which warehouse it serves, on 127.0.0.1 only, and its clear failures."""
from totesys_local import cli
from totesys_local.dashboard import server
from totesys_local.dashboard.queries import URL_VARIABLE


def test_without_a_warehouse_it_says_to_run_make_run_first(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(URL_VARIABLE, raising=False)
    assert cli.main(["dashboard", "--state-dir", str(tmp_path / "none")]) == 1
    error = capsys.readouterr().err
    assert "totesys dashboard: error: no embedded warehouse" in error and "run `make run` first" in error
    assert not (tmp_path / "none").exists()  # no cluster was created on the way


def test_a_bad_port_is_refused_before_anything_starts(monkeypatch, capsys):
    monkeypatch.setenv(URL_VARIABLE, "postgresql://u:p@127.0.0.1:5/w")
    assert cli.main(["dashboard", "--port", "70000"]) == 1
    assert "--port must be between 1 and 65535, got 70000" in capsys.readouterr().err


def test_the_url_comes_from_the_option_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(URL_VARIABLE, "postgresql://u:p@h:1/from_env")
    assert server.warehouse_url("postgresql://u:p@h:1/given", tmp_path) == "postgresql://u:p@h:1/given"
    assert server.warehouse_url(None, tmp_path) == "postgresql://u:p@h:1/from_env"


def test_streamlit_listens_on_localhost_only_and_never_sees_the_url():
    command = server.streamlit_command(8765)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8765"
    assert command[command.index("--server.headless") + 1] == "true"
    assert command[command.index("--browser.gatherUsageStats") + 1] == "false"
    assert not [part for part in command if "postgresql://" in part]


def test_serve_execs_streamlit_with_the_url_in_its_environment(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(server.os, "execve", lambda path, args, env: calls.append((path, args, env)))
    lines = []
    server.serve("postgresql://u:secret@h:1/w", 8765, tmp_path, out=lambda *a, **k: lines.append(a[0]))
    path, args, env = calls[0]
    assert args == server.streamlit_command(8765) and env[URL_VARIABLE] == "postgresql://u:secret@h:1/w"
    assert lines == ["dashboard of postgresql://u@h:1/w on http://127.0.0.1:8765 (Ctrl-C stops it)"]
