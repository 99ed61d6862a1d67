"""`totesys dashboard`: which warehouse it serves, on 127.0.0.1 only, what its HTTP server answers (the
page, its security headers, health, 404/405) and its clear failures."""
import http.client
import socket
import threading
from contextlib import contextmanager

import pytest

from totesys_local import cli
from totesys_local.cluster import free_port, with_database
from totesys_local.dashboard import server
from totesys_local.dashboard.cache import PageCache
from totesys_local.dashboard.queries import URL_VARIABLE
from tests.support.dashboard_page import parse_page


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


@contextmanager
def serving(url, cache=None):
    """The dashboard's HTTP server for ``url`` on a free port in a thread; yields (server, port)."""
    httpd = server.make_server(url, 0, cache)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def request(port, path, method="GET"):
    """(status, headers as a dict, body text) of one request to 127.0.0.1:``port``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path)
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read().decode()
    finally:
        conn.close()


def test_the_server_listens_on_localhost_only(pg_admin_url):
    with serving(with_database(pg_admin_url, "no_such_warehouse")) as (httpd, port):
        assert httpd.server_address[0] == "127.0.0.1"
        assert request(port, "/healthz")[::2] == (200, "ok")


@pytest.mark.slow
def test_the_page_is_served_with_a_policy_that_allows_no_script_and_one_cache_for_all_requests(
        generated_warehouse):
    cache = PageCache()
    with serving(generated_warehouse, cache) as (_, port):
        status, headers, body = request(port, "/")
        misses = cache.misses
        again = request(port, "/?currency=GBP&start=&end=")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy and "unsafe-inline" not in policy
    assert "form-action 'self'" in policy and "frame-ancestors 'none'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    page = parse_page(body)
    assert "payments" in page.sections and page.scripts == 0 and not page.messages
    # The second request shares the first one's cache: only its filtered figures are computed.
    assert again[0] == 200 and parse_page(again[2]).checked_currencies == ["GBP"]
    assert cache.hits > 0 and cache.misses > misses


def test_an_unreadable_warehouse_is_a_503_page_naming_it(pg_admin_url):
    with serving(with_database(pg_admin_url, "no_such_warehouse")) as (_, port):
        status, headers, body = request(port, "/")
    (kind, text), = parse_page(body).messages
    assert status == 503 and kind == "error" and "no_such_warehouse" in text
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_other_paths_are_404_and_other_methods_405(pg_admin_url):
    with serving(with_database(pg_admin_url, "no_such_warehouse")) as (_, port):
        assert request(port, "/admin")[0] == 404
        assert request(port, "/", "POST")[0] == 405
        assert request(port, "/", "HEAD")[::2] == (503, "")


def test_a_page_that_fails_unexpectedly_is_a_500_page_saying_what_failed(pg_admin_url, monkeypatch):
    def broken(*args):
        raise KeyError("currency_code")
    monkeypatch.setattr(server, "render_page", broken)
    with serving(with_database(pg_admin_url, "no_such_warehouse")) as (_, port):
        status, _, body = request(port, "/")
        assert request(port, "/healthz")[0] == 200  # the server goes on serving
    assert status == 500
    assert parse_page(body).messages == [("error", "The dashboard failed: KeyError: 'currency_code'")]


def test_a_port_in_use_is_refused_clearly(monkeypatch, capsys):
    monkeypatch.setenv(URL_VARIABLE, "postgresql://u:p@127.0.0.1:5/w")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["dashboard", "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_serve_prints_where_it_listens_without_the_password_and_stops_on_ctrl_c(monkeypatch, tmp_path):
    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(server.ThreadingHTTPServer, "serve_forever", interrupted)
    lines, port = [], free_port()
    server.serve("postgresql://u:secret@h:1/w", port, tmp_path, out=lambda *a, **k: lines.append(a[0]))
    assert lines == [f"dashboard of postgresql://u@h:1/w on http://127.0.0.1:{port} (Ctrl-C stops it)"]
