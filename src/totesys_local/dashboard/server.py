"""``totesys dashboard``: serve the dashboard page (``app.render_page``) on 127.0.0.1 for one warehouse,
with the standard library's threading HTTP server.

``GET /`` (the page; its filter form submits here), ``GET /healthz`` ("ok": the server is up, whatever
the warehouse's state), ``/favicon.ico`` 204 (none); anything else 404, any method but GET/HEAD 405.
Every answer carries a strict Content-Security-Policy (no script may run; the page has none), ``no-store``
and ``nosniff``. ``serve`` keeps the unfiltered page's figures warm (``PageWarmer``): computed as the
server starts and again within WARM_INTERVAL_SECONDS of each new batch, so a visitor's page comes from
memory rather than the warehouse's SQL.
"""
import os
import sys
import threading
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Hashable, Optional, Type
from urllib.parse import parse_qs, urlsplit

from totesys_local.dashboard import queries
from totesys_local.dashboard.app import CONTENT_SECURITY_POLICY, document, message, render_page
from totesys_local.dashboard.cache import PageCache
from totesys_local.dashboard.queries import URL_VARIABLE
from totesys_local.errors import LocalError

DEFAULT_PORT = 8501
HOST = "127.0.0.1"
# How often the warmer asks the warehouse for its data version (one small query).
WARM_INTERVAL_SECONDS = 5.0
# How long a page request waits for a warm-up in progress before computing the page itself.
WARM_WAIT_SECONDS = 30.0


class DashboardError(LocalError):
    """The dashboard cannot start; the message is for the user."""


def warehouse_url(warehouse: Optional[str], state_dir: "str | os.PathLike[str]") -> str:
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
    return local_cluster(Path(state_dir)).url(WAREHOUSE_DB)


class PageWarmer:
    """Keeps the unfiltered page's figures in ``cache``: ``warm_once`` renders the page when the
    warehouse's data version (``queries.data_version``) differs from the one it last rendered (always
    when the version cannot be read: the page then says why, cheaply); ``start`` does that now and every
    ``interval`` seconds in a daemon thread until ``stop``. A page request arriving during a render
    ``wait``s for it (at most WARM_WAIT_SECONDS) rather than computing the same figures a second time."""

    def __init__(self, url: str, cache: PageCache, interval: float = WARM_INTERVAL_SECONDS) -> None:
        self.url, self.cache, self.interval = url, cache, interval
        self.renders = 0
        self._version: Optional[Hashable] = None
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()

    def _data_version(self) -> Optional[Hashable]:
        try:
            with queries.read_only(self.url) as conn:
                return queries.data_version(conn)
        except Exception:  # noqa: BLE001 - not readable or not loaded: the render says why
            return None

    def warm_once(self) -> bool:
        """Render the unfiltered page into the cache unless its data version is the one last rendered;
        True when it rendered."""
        version = self._data_version()
        if version is not None and version == self._version:
            return False
        self._idle.clear()
        try:
            render_page(self.url, {}, self.cache)
            self.renders += 1
        finally:
            self._idle.set()
        self._version = version
        return True

    def wait(self) -> None:
        self._idle.wait(WARM_WAIT_SECONDS)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.warm_once()
            except Exception as err:  # noqa: BLE001 - the warmer never stops the server; pages still render
                sys.stderr.write(f"dashboard: warming the page failed: {err!r}\n")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._idle.clear()  # requests arriving before the first render wait for it
        threading.Thread(target=self._run, name="dashboard-warmer", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def handler_for(url: str, cache: PageCache,
                warmer: Optional[PageWarmer] = None) -> Type[BaseHTTPRequestHandler]:
    """The request handler class serving the dashboard of ``url`` through ``cache`` (a page request
    first waits for ``warmer``'s render in progress, if any)."""

    class DashboardHandler(BaseHTTPRequestHandler):
        server_version = "totesys-dashboard"
        sys_version = ""

        def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8") -> None:
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

        def do_GET(self) -> None:  # noqa: N802 - the http.server protocol's name
            parts = urlsplit(self.path)
            if parts.path == "/healthz":
                self._send(HTTPStatus.OK, "ok", "text/plain; charset=utf-8")
            elif parts.path == "/favicon.ico":  # browsers ask for it: no icon, and no error in their console
                self._send(HTTPStatus.NO_CONTENT, "", "image/x-icon")
            elif parts.path == "/":
                if warmer is not None:
                    warmer.wait()
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

        def _refuse(self) -> None:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, "GET only", "text/plain; charset=utf-8")

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            sys.stderr.write(f"dashboard: {self.address_string()} {format % args}\n")

    return DashboardHandler


def make_server(url: str, port: int, cache: Optional[PageCache] = None,
                warmer: Optional[PageWarmer] = None) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer for the dashboard of ``url`` on 127.0.0.1:``port`` (0: any free port),
    bound and ready for ``serve_forever`` (page requests wait for ``warmer``'s render in progress)."""
    server = ThreadingHTTPServer((HOST, port), handler_for(url, cache or PageCache(), warmer))
    server.daemon_threads = True
    return server


def serve(warehouse: Optional[str], port: int, state_dir: "str | os.PathLike[str]",
          out: Callable[..., None] = print) -> None:
    """Serve the dashboard until interrupted (Ctrl-C), the unfiltered page kept warm (``PageWarmer``).
    Raises DashboardError before binding when there is nothing to serve or the port is not valid or not
    free."""
    if not 1 <= port <= 65535:
        raise DashboardError(f"--port must be between 1 and 65535, got {port}")
    url = warehouse_url(warehouse, state_dir)
    from totesys_local.runner import describe_url
    cache = PageCache()
    warmer = PageWarmer(url, cache)
    try:
        server = make_server(url, port, cache, warmer)
    except OSError as err:
        raise DashboardError(f"cannot listen on {HOST}:{port}: {err.strerror or err}") from None
    out(f"dashboard of {describe_url(url)} on http://{HOST}:{port} (Ctrl-C stops it)", flush=True)
    warmer.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        warmer.stop()
        server.server_close()
