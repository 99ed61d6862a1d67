"""utils.metrics: EMF lines from every stage (namespace ToteSys), flushed also when a stage fails; the stages
run for real in tests/integration/test_metrics.py."""
from datetime import datetime, timezone

import pytest

from tests.support.emf import emf_lines, metric
from utils.errors import ConfigError
from utils.metrics import (batch_time_from_id, batch_time_from_key, per_table_rows, record_result,
                           stage_metrics)


def test_batch_times_come_from_batch_ids_and_file_keys():
    expected = datetime(2024, 11, 26, 10, 15, 0, 123456, tzinfo=timezone.utc)
    assert batch_time_from_id("20241126T101500123456") == expected
    assert batch_time_from_key("sales_order/2024/11/26/101500123456.parquet") == expected
    with pytest.raises(ValueError, match="not a batch file key"):
        batch_time_from_key("sales_order/latest.parquet")
    with pytest.raises(ValueError):
        batch_time_from_id("yesterday")


def test_a_failing_stage_flushes_its_failure_and_duration_and_raises(capsys):
    @stage_metrics("transform")
    def handler(event, context):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        handler({}, None)
    lines = emf_lines(capsys.readouterr().out)
    stage = {"service": "totesys", "stage": "transform"}
    assert metric(lines, "Failures", **stage) == [1.0]
    assert len(metric(lines, "StageDuration", **stage)) == 1
    assert {namespace for _, _, namespace in lines} == {"ToteSys"}
    assert not metric(lines, "WarehouseLag", service="totesys")


def test_load_emits_rows_lag_rejected_rows_and_the_warehouse_lag(capsys, monkeypatch):
    monkeypatch.setenv("TOTESYS_PER_TABLE_METRICS", "true")
    now = datetime(2024, 11, 26, 11, 0, tzinfo=timezone.utc)
    result = {"batches": ["20241126T100000000000", "20241126T103000000000"],
              "tables": {"fact_sales_order": 12, "dim_date": 3}, "rejected_rows": 2}

    @stage_metrics("load")
    def handler(event, context):
        return result

    assert handler({}, None) is result
    # The real clock is used by the decorator; check the arithmetic with a fixed one too.
    record_result("load", result, now=now)
    lines = emf_lines(capsys.readouterr().out)
    stage = {"service": "totesys", "stage": "load"}
    assert metric(lines, "Failures", **stage) == [0.0]
    assert metric(lines, "RejectedRows", **stage) == [2.0]
    assert metric(lines, "Rows", **stage, table="fact_sales_order") == [12.0, 12.0]
    assert metric(lines, "Rows", **stage, table="dim_date") == [3.0, 3.0]
    assert metric(lines, "Rows", **stage) == [15.0]  # the total joins the stage set the handler flushes
    lags = metric(lines, "WarehouseLag", service="totesys")
    assert len(lags) == 2 and lags[1] == 1800.0  # now minus the newest batch's upper bound
    assert metric(lines, "BatchLag", **stage)[0] > 0


def test_load_without_rejected_rows_emits_none_and_a_caught_up_load_reports_no_lag(capsys):
    record_result("load", {"batches": [], "tables": {}})
    record_result("transform", {"batches": ["20241126T100000000000"], "tables": {}, "rejected_rows": 5})
    lines = emf_lines(capsys.readouterr().out)
    assert not [values for values, _, _ in lines if "RejectedRows" in values]
    # a load with nothing pending: everything ingested so far is in the warehouse
    assert metric(lines, "WarehouseLag", service="totesys") == [0.0]


def test_local_runs_write_metrics_to_the_log_file_not_stdout(tmp_path, monkeypatch, capsys):
    log_file = tmp_path / "run.jsonl"
    monkeypatch.setenv("TOTESYS_LOG_FILE", str(log_file))

    @stage_metrics("transform")
    def handler(event, context):
        return {"batches": [], "tables": {}}

    handler({}, None)
    assert not emf_lines(capsys.readouterr().out)
    assert metric(emf_lines(log_file.read_text()), "Failures", service="totesys", stage="transform") == [0.0]


def test_a_metric_that_cannot_be_worked_out_does_not_fail_a_committed_stage(capsys, caplog):
    @stage_metrics("load")
    def handler(event, context):
        return {"batches": ["not-a-batch-id"], "tables": {}}

    assert handler({}, None) == {"batches": ["not-a-batch-id"], "tables": {}}
    assert "load metrics incomplete: ValueError" in caplog.text
    assert metric(emf_lines(capsys.readouterr().out), "Failures", service="totesys", stage="load") == [0.0]


@pytest.mark.parametrize("text, on", [("true", True), ("1", True), ("ON", True), ("false", False),
                                      ("0", False), ("", False)])
def test_per_table_rows_follow_their_switch(text, on, capsys):
    assert per_table_rows({"TOTESYS_PER_TABLE_METRICS": text}) is on
    assert per_table_rows({}) is False


def test_a_bad_per_table_switch_is_a_config_error_and_never_fails_the_stage(capsys, monkeypatch):
    with pytest.raises(ConfigError, match="TOTESYS_PER_TABLE_METRICS"):
        per_table_rows({"TOTESYS_PER_TABLE_METRICS": "maybe"})
    monkeypatch.setenv("TOTESYS_PER_TABLE_METRICS", "maybe")

    @stage_metrics("load")
    def handler(event, context):
        return {"batches": [], "tables": {"dim_date": 3}}

    assert handler({}, None) == {"batches": [], "tables": {"dim_date": 3}}
