"""``totesys dashboard``: serve the dashboard page (``app.render_page``) on 127.0.0.1 for one warehouse,
with the standard library's threading HTTP server.

``GET /`` (the page; its filter form submits here), ``GET /healthz`` ("ok": the server is up, whatever
the warehouse's state), ``/favicon.ico`` 204 (none); anything else 404, any method but GET/HEAD 405.
Every answer carries a strict Content-Security-Policy (no script may run; the page has none), ``no-store``
and ``nosniff``.
"""
import os
import sys
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from totesys_local.dashboard.app import CONTENT_SECURITY_POLICY, document, message, render_page
from totesys_local.dashboard.cache import PageCache
from totesys_local.dashboard.queries import URL_VARIABLE
from totesys_local.errors import LocalError

DEFAULT_PORT = 8501
HOST = "127.0.0.1"


class DashboardError(LocalError):
    """The dashboard cannot start; the message is for the user."""


def warehouse_url(warehouse, state_dir):
    """The URL to serve: ``warehouse``, else TOTESYS_WAREHOUSE_URL, else the embedded warehouse of
    ``state_dir`` (which `make run` creates). Raises DashboardError when there is none."""
    url = warehouse or os.environ.get(URL_VARIABLE)
    if url:
        return url
    if not (Path(state_dir) / "cluster.json").exists():
        raise DashboardError(f"no embedded warehouse under {state_dir}/ yet: run `make run` first, "
                             "or give --warehouse URL")
    from totesys_local.cluster import local_cluster
    from totesys_local.runner import WAREHOUSE_DB
    return local_cluster(state_dir).url(WAREHOUSE_DB)


def handler_for(url, cache):
    """The request handler class serving the dashboard of ``url`` through ``cache``."""

    class DashboardHandler(BaseHTTPRequestHandler):
        server_version = "totesys-dashboard"
        sys_version = ""

        def _send(self, status, body, content_type="text/html; charset=utf-8"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - the http.server protocol's name
            parts = urlsplit(self.path)
            if parts.path == "/healthz":
                self._send(HTTPStatus.OK, "ok", "text/plain; charset=utf-8")
            elif parts.path == "/favicon.ico":  # browsers ask for it: no icon, and no error in their console
                self._send(HTTPStatus.NO_CONTENT, "", "image/x-icon")
            elif parts.path == "/":
                try:
                    page = render_page(url, parse_qs(parts.query), cache)
                except Exception as err:  # noqa: BLE001 - the user sees what failed, the log the traceback
                    self.log_error("page failed: %r", err)
                    self._send(HTTPStatus.INTERNAL_SERVER_ERROR, document(message(
                        "error", f"The dashboard failed: {escape(type(err).__name__)}: {escape(str(err))}")))
                    return
                self._send(page.status, page.html)
            else:
                self._send(HTTPStatus.NOT_FOUND, document(message("error", "No such page: <a href=\"/\">"
                                                                           "the dashboard</a>.")))

        do_HEAD = do_GET  # noqa: N815

        def _refuse(self):
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, "GET only", "text/plain; charset=utf-8")

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

        def log_message(self, format, *args):  # noqa: A002 - http.server's signature
            sys.stderr.write(f"dashboard: {self.address_string()} {format % args}\n")

    return DashboardHandler


def make_server(url, port, cache=None):
    """A ThreadingHTTPServer for the dashboard of ``url`` on 127.0.0.1:``port`` (0: any free port),
    bound and ready for ``serve_forever``."""
    server = ThreadingHTTPServer((HOST, port), handler_for(url, cache or PageCache()))
    server.daemon_threads = True
    return server


def serve(warehouse, port, state_dir, out=print):
    """Serve the dashboard until interrupted (Ctrl-C). Raises DashboardError before binding when there
    is nothing to serve or the port is not valid or not free."""
    if not 1 <= port <= 65535:
        raise DashboardError(f"--port must be between 1 and 65535, got {port}")
    url = warehouse_url(warehouse, state_dir)
    from totesys_local.runner import describe_url
    try:
        server = make_server(url, port)
    except OSError as err:
        raise DashboardError(f"cannot listen on {HOST}:{port}: {err.strerror or err}") from None
    out(f"dashboard of {describe_url(url)} on http://{HOST}:{port} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
