"""Structured logs of local runs, each checked in a FRESH interpreter: what a new user's first
`make run` does (the stage modules are imported for the first time with TOTESYS_LOG_FILE set)."""
import json
import os
import subprocess  # nosec B404 - runs this project's own Python
import sys
import textwrap
from pathlib import Path

import pytest

# Each test starts fresh interpreters (one runs the whole local pipeline): not in make test-fast.
pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[2] / "src"


def _python(code, **env):
    """Run ``code`` in a new interpreter (src/ on its path); return the completed process."""
    environment = dict(os.environ, PYTHONPATH=str(SRC), **env)
    environment.pop("TOTESYS_LOG_FILE", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environment, timeout=600, check=False)


def _records(path):
    """The log records of a file; the EMF metric lines utils.metrics writes beside them (key ``_aws``)
    are not log records."""
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return [record for record in lines if "_aws" not in record]


def test_handlers_log_to_the_current_file_on_first_import(tmp_path):
    """The stage module and stage_handler share one Logger per service; each invocation's lines go
    to the file TOTESYS_LOG_FILE names at that moment, every line JSON with stage and run_id."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    done = _python(f"""
        import os
        from types import SimpleNamespace
        os.environ["TOTESYS_LOG_FILE"] = {str(first)!r}
        import ingest
        for path, request in (({str(first)!r}, "req-1"), ({str(second)!r}, "req-2")):
            os.environ["TOTESYS_LOG_FILE"] = path
            try:
                ingest.lambda_handler({{"tables_to_query": ["no_such_table"]}},
                                      SimpleNamespace(aws_request_id=request))
            except Exception as err:
                print(type(err).__name__)
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["UnknownTableError", "UnknownTableError"]
    for path, request in ((first, "req-1"), (second, "req-2")):
        records = _records(path)
        assert [r["level"] for r in records] == ["CRITICAL", "INFO"]
        assert all(r["stage"] == "ingest" and r["run_id"] == request for r in records)
        assert records[0]["error_type"] == "UnknownTableError"


def test_two_runs_in_one_process_write_their_own_log_files(tmp_path, totesys_url, warehouse_url):
    state = tmp_path / "state"
    done = _python(f"""
        import sys
        from totesys_local.cli import main
        args = ["run", "--source", {totesys_url!r}, "--warehouse", {warehouse_url!r},
                "--state-dir", {str(state)!r}]
        sys.exit(main(args) or main(args))
        """)
    assert done.returncode == 0, done.stderr
    logs = sorted((state / "logs").glob("*.jsonl"))
    assert len(logs) == 2
    printed = {line.split(": ", 1)[1] for line in done.stdout.splitlines()
               if line.startswith("structured logs: ")}
    assert printed == {str(path) for path in logs}
    run_ids = []
    for path in logs:
        records = _records(path)
        assert records and all("stage" in r and "run_id" in r for r in records)
        assert {r["stage"] for r in records} >= {"ingest"}
        ended = [r for r in records if r["message"] in ("ingest succeeded", "load succeeded")]
        assert ended, f"{path} has no end-of-stage line"
        run_ids.append({r["run_id"] for r in records if r["stage"] == "ingest"})
    assert len(run_ids[0]) == 1 and run_ids[0] != run_ids[1]
