"""The verify Lambda on moto: its report, its VerifyMismatches metric line, a failure when it cannot run."""
import json

import pytest

import verify
from tests.support.db import run_sql
from utils.errors import CredentialsError


@pytest.fixture
def metric_lines(tmp_path, monkeypatch):
    """The EMF lines the function writes (utils.metrics.emit writes to TOTESYS_LOG_FILE when it is set)."""
    path = tmp_path / "log.jsonl"
    monkeypatch.setenv("TOTESYS_LOG_FILE", str(path))
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)

    def read():
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [line["VerifyMismatches"] for line in lines if "VerifyMismatches" in line]
    return read


def test_the_lambda_reports_and_emits_its_metric(loaded, metric_lines):
    result = verify.lambda_handler({}, None)
    assert result["matched"] is True and metric_lines() == [0]

    run_sql(loaded[1], "UPDATE dim_location SET city = 'Nowhere' WHERE location_id = 2")
    result = verify.lambda_handler({}, None)
    assert result["mismatches"] == 1 and metric_lines() == [0, 1]
    location = next(t for t in result["tables"] if t["table"] == "dim_location")
    assert location["ids"]["differing"] == [2]


def test_a_rollup_difference_counts_in_the_metric(loaded, metric_lines):
    run_sql(loaded[1], "DELETE FROM rollup_payment_daily")
    result = verify.lambda_handler({}, None)
    assert result["rollups"]["rollups"] == ["rollup_payment_daily"]
    assert result["mismatches"] == result["rollups"]["mismatches"] > 0
    assert metric_lines() == [result["mismatches"]]


def test_the_lambda_fails_loudly_when_it_cannot_run(loaded, metric_lines, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_SECRET_ID", "missing/secret")
    with pytest.raises(CredentialsError):
        verify.lambda_handler({}, None)
    assert metric_lines() == []
