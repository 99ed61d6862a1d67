"""main-terraform/dashboard.tf against the metrics the code emits (utils.metrics): the CloudWatch dashboard
shows every metric, the freshness alarm watches the lag the load stage emits (offline: HCL parsed)."""
import ast
import json
import re

from tests.infra.hcl import MAIN, SRC, default, load_file
from utils import metrics

DASHBOARD_TF = MAIN / "dashboard.tf"


def resolve(value, stack):
    """Replace ``${local.name}`` references to literal locals by their values (recursively)."""
    if isinstance(value, str):
        match = re.fullmatch(r"\$\{local\.(\w+)\}", value)
        if match and not str(stack["locals"][match.group(1)]).startswith("${"):
            return stack["locals"][match.group(1)]
        return re.sub(r"\$\{local\.(\w+)\}", lambda m: str(resolve(m.group(0), stack)), value)
    if isinstance(value, list):
        return [resolve(item, stack) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item, stack) for key, item in value.items()}
    return value


def emitted_metric_names():
    """Every metric name utils/metrics.py passes to add_metric/_single/_per_stage as a string literal, and
    the optional load counts."""
    names = set()
    for node in ast.walk(ast.parse((SRC / "utils" / "metrics.py").read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("metrics.add_metric", "_single",
                                                                     "_per_stage"):
            for keyword in node.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    names.add(keyword.value.value)
            if node.args and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
    return names | set(metrics.OPTIONAL_LOAD_COUNTS.values())


def test_the_scanner_finds_the_emitted_metrics():
    assert {"StageDuration", "Failures", "BatchLag", "Rows", "RejectedRows", "DeletedRows",
            "WarehouseLag"} <= emitted_metric_names()


def test_namespace_and_service_match_the_code(main_stack):
    assert main_stack["locals"]["metrics_namespace"] == metrics.NAMESPACE == "ToteSys"
    assert main_stack["locals"]["metrics_service"] == metrics.SERVICE


def test_freshness_alarm_is_30_minutes_missing_data_breaching_to_the_alert_topic(main_stack):
    alarm = resolve(main_stack["resource"]["aws_cloudwatch_metric_alarm"]["warehouse_freshness"], main_stack)
    assert alarm["namespace"] == "ToteSys"
    assert alarm["metric_name"] == "WarehouseLag"
    assert alarm["dimensions"] == {"service": metrics.SERVICE}
    assert alarm["treat_missing_data"] == "breaching"
    assert alarm["threshold"] == 1800 and alarm["unit"] == "Seconds"  # the lag is emitted in seconds
    assert alarm["comparison_operator"] == "GreaterThanThreshold"
    assert alarm["statistic"] == "Maximum"
    # Missing data breaches after 30 minutes without a fresh load, not sooner.
    assert alarm["period"] * alarm["evaluation_periods"] == 1800
    assert alarm["datapoints_to_alarm"] == alarm["evaluation_periods"]
    assert alarm["alarm_actions"] == ["${aws_sns_topic.alerts.arn}"]
    assert "more than 30 minutes behind" in alarm["alarm_description"]


def test_a_period_of_the_alarm_is_no_shorter_than_the_schedule(main_stack):
    rate = re.fullmatch(r"rate\((\d+) minutes?\)", default(main_stack, "schedule_expression"))
    alarm = main_stack["resource"]["aws_cloudwatch_metric_alarm"]["warehouse_freshness"]
    assert rate and int(rate.group(1)) * 60 <= alarm["period"]


def test_the_alert_topic_is_the_email_topic(main_stack):
    topic = main_stack["resource"]["aws_sns_topic_subscription"]["alert_email"]
    assert topic["topic_arn"] == "${aws_sns_topic.alerts.arn}" and topic["protocol"] == "email"


def test_dashboard_shows_every_metric_the_stages_emit(main_stack):
    dashboard = main_stack["resource"]["aws_cloudwatch_dashboard"]["pipeline"]
    assert dashboard["dashboard_name"] == "${var.project}-pipeline"
    assert dashboard["dashboard_body"] == "${jsonencode({widgets = local.dashboard_widgets})}"
    widgets = resolve(main_stack["locals"]["dashboard_widgets"], main_stack)
    text = json.dumps(widgets)
    for name in emitted_metric_names():
        assert f'"{name}"' in text or f'\\"{name}\\"' in text or f"'{name}'" in text, name
    assert all(widget["properties"]["region"] == "${var.region}" for widget in widgets)
    # Per-stage metrics are drawn for all three stages (the for-expression over local.stages).
    assert main_stack["locals"]["stages"] == ["ingest", "transform", "load"]
    assert main_stack["locals"]["per_stage_metrics"] == ["StageDuration", "BatchLag", "Failures"]
    per_stage = main_stack["locals"]["per_stage"]
    assert "for name in local.per_stage_metrics" in per_stage and "for stage in local.stages" in per_stage
    lag = next(w for w in widgets if "WarehouseLag" in json.dumps(w["properties"]["metrics"]))
    assert lag["properties"]["annotations"]["horizontal"][0]["value"] == 1800


def test_dashboard_tf_has_no_literal_account_or_region():
    text = DASHBOARD_TF.read_text()
    assert not re.search(r"\b\d{12}\b", text)
    assert not re.search(r"\b(eu|us|ap)-(west|east|central|south|north)-\d\b", text)
    load_file(DASHBOARD_TF)  # parses
