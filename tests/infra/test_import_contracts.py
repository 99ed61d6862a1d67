"""The import contracts of pyproject.toml ([tool.importlinter], run by `make check-imports` in `make lint`)
hold on the code, and fail on a planted cross-stage import: run on a copy of src/ so the real tree is
never touched."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.hcl import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """A copy of src/ and pyproject.toml; returns a function running lint-imports on it."""
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (make install-dev-tools)")
    root = tmp_path_factory.mktemp("imports")
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")

    def lint():
        # The copy comes first on the path, ahead of the editable install of the real src/.
        env = dict(os.environ, PYTHONPATH=str(root / "src"))
        return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True,
                              text=True, timeout=120)
    lint.root = root
    return lint


def plant(root, module, line):
    path = root / "src" / module
    original = path.read_text()
    path.write_text(original + f"\n{line}\n")
    return lambda: path.write_text(original)


def test_the_code_keeps_every_import_contract(copy):
    result = copy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("utils/load/merge.py", "from utils.transform.deletes import drop_deleted  # noqa", "siblings"),
    ("utils/transform/run.py", "import utils.ingest.deletes  # noqa", "siblings"),
    ("utils/catalog/formats.py", "from utils.load.schema import REJECTED  # noqa", "siblings"),
    ("utils/config.py", "import totesys_local.cli  # noqa", "never the reverse"),
    ("totesys_local/cli.py", "from totesys_local.daemon import server  # noqa", "daemon is reached"),
    # A function-local import counts (the circle pending -> cdc_cli -> trust -> runner -> pending hid so).
    ("totesys_local/pending.py", "def _planted():\n    from totesys_local.cdc_cli import slot_name  # noqa",
     "one way"),
])
def test_a_planted_wrong_import_breaks_a_contract(copy, module, line, broken):
    restore = plant(copy.root, module, line)
    try:
        result = copy()
    finally:
        restore()
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout
