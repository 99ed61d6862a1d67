"""The tests mirror the packages (tests/README.md): every test module sits in unit/ or integration/ under
a folder named like the src/utils package it tests, or in one of the suites of their own; every folder is
a package; no test imports another test module or a conftest (shared helpers live in tests/support/). A
module added at the old places (tests/test_*.py, tests/cdc, tests/verify, tests/utils) fails here, naming
where it belongs."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITES = {"totesys_local", "dashboard", "model", "infra"}
SPLIT = {"unit", "integration"}
ACROSS_STAGES = {"pipeline"}  # integration/pipeline: the three stages end to end


def misplaced(repo):
    """[(path, reason)] of the test modules and folders under repo/tests that break the layout."""
    tests, utils = repo / "tests", repo / "src" / "utils"
    problems = []
    for module in sorted(tests.rglob("test_*.py")):
        parts = module.relative_to(tests).parts
        if parts[0] in SUITES:
            continue
        if parts[0] not in SPLIT:
            problems.append((module, "not under tests/unit/<package>/ or tests/integration/<package>/"))
            continue
        package = parts[1:-1]
        if package and package[0] in ACROSS_STAGES and parts[0] == "integration":
            continue
        where = utils.joinpath(*package) if package else utils
        if package and not (where.is_dir() or where.with_suffix(".py").is_file()):
            problems.append((module, f"src/utils/{'/'.join(package)} is no package or module of utils"))
    for folder in sorted(p for p in tests.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        if any(folder.glob("test_*.py")) and not (folder / "__init__.py").is_file():
            problems.append((folder, "has test modules but no __init__.py"))
    return problems


def test_every_test_module_sits_where_the_layout_says():
    assert [(str(path.relative_to(REPO)), reason) for path, reason in misplaced(REPO)] == []


def _tree(tmp_path, *files):
    for name in ("src/utils/load/__init__.py", "src/utils/compat.py", *files):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    return {str(path.relative_to(tmp_path / "tests")) for path, _ in misplaced(tmp_path)}


def test_the_layout_check_accepts_packages_modules_and_the_suites(tmp_path):
    assert _tree(tmp_path, "tests/unit/load/__init__.py", "tests/unit/load/test_a.py",
                 "tests/integration/compat/__init__.py", "tests/integration/compat/test_b.py",
                 "tests/integration/pipeline/__init__.py", "tests/integration/pipeline/test_c.py",
                 "tests/unit/__init__.py", "tests/unit/test_d.py",
                 "tests/model/__init__.py", "tests/model/test_e.py") == set()


def test_the_layout_check_names_a_module_at_the_root_a_stray_folder_and_a_missing_init(tmp_path):
    assert _tree(tmp_path, "tests/test_root.py",
                 "tests/unit/loader/__init__.py", "tests/unit/loader/test_a.py",
                 "tests/integration/load/test_b.py") \
        == {"test_root.py", "unit/loader/test_a.py", "integration/load"}


def test_make_test_runs_every_folder_the_layout_allows():
    """run-pytest names its folders (slowest first): a suite added to the layout must be added there."""
    line = next(line for line in (REPO / "Makefile").read_text().splitlines()
                if line.startswith("TEST_FOLDERS :="))
    folders = line.split(":=")[1].split()
    assert sorted(folders) == sorted(f"tests/{name}" for name in SUITES | SPLIT)


def imports_of_tests(repo):
    """[(file, module)] of the imports, under repo/tests, of a test module or a conftest."""
    found = []
    for path in sorted((repo / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                last = name.rsplit(".", 1)[-1]
                if name.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                    found.append((str(path.relative_to(repo)), name))
    return found


def test_no_test_imports_another_test_module_or_a_conftest():
    assert imports_of_tests(REPO) == []


def test_the_import_check_finds_a_conftest_and_a_test_module_imported(tmp_path):
    (tmp_path / "tests" / "a").mkdir(parents=True)
    (tmp_path / "tests" / "a" / "test_x.py").write_text(
        "from tests.a.conftest import helper\nimport tests.b.test_y\nfrom tests.support.db import run_sql\n")
    assert imports_of_tests(tmp_path) == [("tests/a/test_x.py", "tests.a.conftest"),
                                          ("tests/a/test_x.py", "tests.b.test_y")]
