"""utils.metrics from the real stages (real PostgreSQL, moto): rows per table, lag, a failure counted; the
metrics' own rules are in tests/unit/test_metrics.py."""
import pytest

import ingest
import load
import transform
from tests.support.emf import emf_lines, metric


def test_the_real_stages_emit_rows_per_table_and_lag(totesys_url, warehouse_url, pipeline_env, capsys):
    pipeline_env(source_url=totesys_url, warehouse_url=warehouse_url)
    files = ingest.lambda_handler({"tables_to_query": ["currency", "design"]}, None)
    lines = emf_lines(capsys.readouterr().out)
    stage = {"service": "totesys", "stage": "ingest"}
    # Totals only by default: the per-table metrics are paid for only when asked for.
    assert not [dims for _, dims, _ in lines if "table" in dims]
    assert metric(lines, "Rows", **stage)[0] > 3
    assert metric(lines, "Failures", **stage) == [0.0]
    assert metric(lines, "BatchLag", **stage)[0] >= 0
    assert not metric(lines, "WarehouseLag", service="totesys")  # ingest had changes: load decides

    loaded = load.lambda_handler(transform.lambda_handler(files, None), None)
    lines = emf_lines(capsys.readouterr().out)
    assert metric(lines, "Rows", service="totesys", stage="load") == [float(sum(loaded["tables"].values()))]
    assert len(metric(lines, "WarehouseLag", service="totesys")) == 1

    # Nothing new in totesys: ingest never reports the freshness (a load that then fails must leave the
    # alarm's metric missing); the load that finds nothing pending reports 0.
    assert ingest.lambda_handler({"tables_to_query": ["currency", "design"]}, None) == {}
    lines = emf_lines(capsys.readouterr().out)
    assert not metric(lines, "WarehouseLag", service="totesys")
    load.lambda_handler(transform.lambda_handler({}, None), None)
    lines = emf_lines(capsys.readouterr().out)
    assert metric(lines, "WarehouseLag", service="totesys") == [0.0]


def test_a_failing_real_stage_is_counted(totesys_url, pipeline_env, capsys):
    pipeline_env(source_url=totesys_url)
    with pytest.raises(Exception, match="nope"):
        ingest.lambda_handler({"tables_to_query": ["nope"]}, None)
    lines = emf_lines(capsys.readouterr().out)
    assert metric(lines, "Failures", service="totesys", stage="ingest") == [1.0]
