"""``totesys dashboard``: serve the dashboard with Streamlit on 127.0.0.1 for one warehouse."""
import os
import sys
from pathlib import Path

from totesys_local.dashboard.queries import URL_VARIABLE

APP = Path(__file__).with_name("app.py")
DEFAULT_PORT = 8501


class DashboardError(Exception):
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


def streamlit_command(port):
    """The Streamlit command line: headless, 127.0.0.1 only, no usage statistics, no file watcher."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal", "--theme.base", "light"]


def serve(warehouse, port, state_dir, out=print):
    """Become the Streamlit server (exec: Ctrl-C and signals reach Streamlit itself, no orphan is left)
    and serve until interrupted. The URL reaches the app through the environment, never the command
    line (no password in ``ps``). Raises DashboardError before exec when there is nothing to serve."""
    if not 1 <= port <= 65535:
        raise DashboardError(f"--port must be between 1 and 65535, got {port}")
    url = warehouse_url(warehouse, state_dir)
    from totesys_local.runner import describe_url
    out(f"dashboard of {describe_url(url)} on http://127.0.0.1:{port} (Ctrl-C stops it)", flush=True)
    env = dict(os.environ, **{URL_VARIABLE: url})
    command = streamlit_command(port)
    os.execve(command[0], command, env)  # nosec B606 - fixed argument list, our own interpreter
