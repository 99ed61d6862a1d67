"""`make install-requirements` installs the runtime dependencies only: commands that need a
development package say what to install (one line, exit 1, no traceback); `pending` needs none."""
import os
import subprocess  # nosec B404 - runs this project's own Python
import sys
import textwrap
from pathlib import Path

import pytest

from totesys_local.cli import missing_dependency_message

SRC = Path(__file__).resolve().parents[2] / "src"


def _cli_without(package, argv):
    """Run ``totesys argv`` in a fresh interpreter where ``package`` cannot be imported."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules[{package!r}] = None  # what a venv without it does: ModuleNotFoundError
        from totesys_local.cli import main
        sys.exit(main({argv!r}))
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(SRC)), check=False)


@pytest.mark.parametrize("command", ["run", "retry"])
def test_commands_needing_moto_say_what_to_install(tmp_path, command):
    done = _cli_without("moto", [command, "--state-dir", str(tmp_path)])
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"totesys {command} needs moto, a development dependency: run `make install-dev-tools` "
        "(or `venv/bin/pip install -r requirements-dev.txt`)")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_pending_needs_no_development_package(tmp_path):
    done = _cli_without("moto", ["pending", "--state-dir", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert "ingest batches not yet transformed: 0" in done.stdout


def test_a_missing_runtime_package_points_at_install_requirements():
    missing = ModuleNotFoundError("No module named 'pg8000'", name="pg8000")
    message = missing_dependency_message("run", missing)
    assert message == ("totesys run needs the Python package pg8000, which is not installed: "
                       "run `make install-requirements` (or `venv/bin/pip install -r requirements.txt`)")
