"""utils.logger: one JSON object per line, and the run id and duration stage_handler adds."""
import json
import logging

import pytest


def test_logger_writes_one_json_object_per_line(tmp_path, monkeypatch):
    from utils.logger import get_logger
    path = tmp_path / "log.jsonl"
    monkeypatch.setenv("TOTESYS_LOG_FILE", str(path))
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"t{tmp_path.name}")
    logger = get_logger("ingest")
    logger.critical("stage failed", table="sales_order")
    for handler in logging.getLogger(f"t{tmp_path.name}-ingest").handlers:
        handler.flush()
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["level"] == "CRITICAL" and record["stage"] == "ingest"
    assert record["table"] == "sales_order"


def test_stage_handler_tags_the_run_and_times_it(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from utils.logger import stage_handler
    path = tmp_path / "log.jsonl"
    monkeypatch.setenv("TOTESYS_LOG_FILE", str(path))
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"h{tmp_path.name}")

    @stage_handler("load")
    def handler(event, context):
        get_logger("load").info("working")
        if event.get("fail"):
            raise ValueError("bad batch")
        return {"ok": True}

    from utils.logger import get_logger
    assert handler({}, SimpleNamespace(aws_request_id="req-1")) == {"ok": True}
    with pytest.raises(ValueError, match="bad batch"):
        handler({"fail": True}, None)
    for handler_ in logging.getLogger(f"h{tmp_path.name}-load").handlers:
        handler_.flush()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["message"], r.get("run_id")) for r in records[:2]] == [("working", "req-1"),
                                                                      ("load succeeded", "req-1")]
    assert records[1]["duration_ms"] >= 0 and records[1]["outcome"] == "succeeded"
    failed = next(r for r in records if r["message"] == "load failed" and r["level"] == "INFO")
    assert failed["outcome"] == "failed" and failed["run_id"] not in ("req-1", None)
    assert records[2]["run_id"] == failed["run_id"]
    critical = [r for r in records if r["level"] == "CRITICAL"]
    assert len(critical) == 1 and critical[0]["error_type"] == "ValueError"
    assert critical[0]["error"] == "bad batch" and critical[0]["run_id"] == failed["run_id"]
