"""Published versions: every execution of the state machine runs one release (offline: HCL parsed).

Step Functions keeps a running execution on the definition it started with; Lambda resolves an alias or
an unqualified ARN at each invocation. So the definition must name published versions, and the state
machine's role must not be able to invoke the unqualified ARN ($LATEST)."""
import re

from tests.infra.hcl import ASL_TEMPLATE
from totesys_local.asl import placeholders

FUNCTION_PLACEHOLDERS = {"ingest_function_arn", "transform_function_arn", "load_function_arn"}


def test_every_deploy_publishes_a_version_and_moves_the_live_alias(main_stack):
    function = main_stack["resource"]["aws_lambda_function"]["stage"]
    assert function["publish"] is True
    alias = main_stack["resource"]["aws_lambda_alias"]["live"]
    assert alias["for_each"] == "${local.functions}"
    assert alias["function_version"] == "${aws_lambda_function.stage[each.key].version}"


def test_the_definition_names_the_published_versions(main_stack):
    definition = main_stack["resource"]["aws_sfn_state_machine"]["pipeline"]["definition"]
    passed = dict(re.findall(r"(\w+_function_arn) = ([^,}]+)", definition))
    template = placeholders(ASL_TEMPLATE.read_text())
    assert set(passed) == FUNCTION_PLACEHOLDERS == template - {"alert_topic_arn"}
    for name, value in passed.items():
        stage = name.removesuffix("_function_arn")
        assert value.strip() == f'aws_lambda_function.stage["{stage}"].qualified_arn', (name, value)


def test_the_state_machine_may_invoke_only_qualified_arns(main_stack):
    statements = main_stack["data"]["aws_iam_policy_document"]["state_machine"]["statement"]
    (invoke,) = [s for s in statements if "lambda:InvokeFunction" in s["actions"]]
    assert invoke["resources"] == '${[for fn in aws_lambda_function.stage : "${fn.arn}:*"]}'
