"""What a first deploy and a teardown get by default (offline: HCL parsed, defaults resolved)."""
import re

import pytest

from tests.infra.hcl import IMMUTABLE, MAIN, default, load_file


def test_the_schedule_starts_nothing_until_enabled(main_stack):
    """The alert e-mail subscription must be confirmed before a failure can be heard: the first deploy
    creates the rule DISABLED (README, "First deploy")."""
    assert default(main_stack, "schedule_enabled") is False
    rule = main_stack["resource"]["aws_cloudwatch_event_rule"]["schedule"]
    state = rule["state"]
    assert state == '${var.schedule_enabled ? "ENABLED" : "DISABLED"}'


def test_versioned_buckets_are_destroyable_only_when_opted_in(immutable_stack):
    assert default(immutable_stack, "force_destroy_buckets") is False
    for name in ("ingest", "processed"):
        bucket = immutable_stack["resource"]["aws_s3_bucket"][name]
        assert bucket["force_destroy"] == "${var.force_destroy_buckets}", name


def test_per_table_row_metrics_are_off_by_default_and_reach_the_functions(main_stack):
    assert default(main_stack, "per_table_row_metrics") is False
    environment = main_stack["locals"]["function_environment"]
    assert environment["TOTESYS_PER_TABLE_METRICS"] == '${var.per_table_row_metrics ? "true" : "false"}'


@pytest.mark.parametrize("stack", [IMMUTABLE, MAIN], ids=["immutable", "main"])
def test_terraform_is_at_least_the_release_where_s3_locking_is_ga(stack):
    (block,) = load_file(stack / "versions.tf")["terraform"]
    assert block["backend"][0]["s3"]["use_lockfile"] is True
    minimum = re.fullmatch(r">= (\d+)\.(\d+)", block["required_version"])
    assert minimum and (int(minimum[1]), int(minimum[2])) >= (1, 11), block["required_version"]
