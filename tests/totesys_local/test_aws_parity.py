"""What AWS enforces, the local run enforces: IAM from main-terraform/iam.tf (every handler under its role,
the state machine under its own) and each function's Terraform timeout."""
import json
import textwrap

import boto3
import pytest

from totesys_local import aws_emulation, runner, terraform_values
from totesys_local.terraform_values import RenderError, render_policies


def _without(sid, policies_of=render_policies):
    """render_policies with the statement ``sid`` dropped from whichever document holds it."""
    def render(known, *args, **kwargs):
        policies = policies_of(known, *args, **kwargs)
        for document in policies.values():
            document["Statement"] = [s for s in document["Statement"] if s.get("Sid") != sid]
        return policies
    return render


# (statement dropped, the one line the run fails with: stage, action, resource)
DROPPED = [
    ("WriteIngestPrefixes", "ingest: AccessDenied: role totesys-ingest-role may not s3:PutObject on "
                            "arn:aws:s3:::totesys-local-ingest/"),
    ("ReadTotesysSecret", "ingest: AccessDenied: role totesys-ingest-role may not "
                          "secretsmanager:GetSecretValue on "
                          "arn:aws:secretsmanager:eu-west-2:123456789012:secret:totesys/db-credentials"),
    ("FindOverlappingExecutions", "state machine: AccessDenied: role totesys-pipeline-role may not "
                                  "states:ListExecutions on arn:aws:states:eu-west-2:123456789012:"
                                  "stateMachine:totesys-pipeline"),
    ("InvokeTheThreeStages", "state machine: AccessDenied: role totesys-pipeline-role may not "
                             "lambda:InvokeFunction on arn:aws:lambda:eu-west-2:123456789012:function:"
                             "totesys-ingest"),
]


@pytest.mark.slow
@pytest.mark.parametrize("sid, line", DROPPED, ids=[sid for sid, _ in DROPPED])
def test_a_run_missing_one_permission_fails_naming_stage_action_and_resource(
        monkeypatch, tmp_path, source_url, warehouse_url, sid, line):
    """`totesys run` (what `make run` runs) with one statement dropped from the rendered policies. With
    every statement the same runs succeed (tests/totesys_local/test_runner.py, test_state_machine.py)."""
    monkeypatch.setattr(aws_emulation, "render_policies", _without(sid))
    with pytest.raises(runner.RunError) as failure:
        runner.run_pipeline(source_url, warehouse_url, tmp_path / "state", out=lambda line: None)
    message = str(failure.value)
    assert message.startswith(f"ToteSys pipeline FAILED: {line}"), message
    assert "\n" not in message
    recorded = json.loads((tmp_path / "state" / "last_error.json").read_text())
    assert recorded["error_type"] == "AccessDenied" and line in recorded["message"]


def test_a_call_the_enforcement_cannot_map_is_refused_not_waved_through(aws_env, monkeypatch):
    for key, value in {"INGEST_BUCKET": "p-in", "PROCESSED_BUCKET": "p-out", "TOTESYS_SECRET_ID": "p/t",
                       "WAREHOUSE_SECRET_ID": "p/w"}.items():
        monkeypatch.setenv(key, value)

    def handler(event, context):
        boto3.client("s3").create_bucket(Bucket="anything",
                                         CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})

    with aws_emulation.emulated_aws({}):
        aws_emulation.deploy_pipeline("totesys")
        headers = {}
        body = json.loads(aws_emulation._call_handler(
            handler, {}, aws_emulation._Current.enforcement.functions["totesys-ingest"], headers))
    assert headers == {"x-amz-function-error": "Unhandled"}
    assert body["errorType"] == "EnforcementGap" and "s3 CreateBucket" in body["errorMessage"]


def test_handlers_see_their_terraform_timeout_and_an_overrun_ends_as_lambda_ends_it(aws_env, monkeypatch):
    """The context counts down from variables.tf's timeout; a handler still running at its timeout gives
    Step Functions Lambda's Sandbox.Timedout and its credentials stop working."""
    for key, value in {"INGEST_BUCKET": "p-in", "PROCESSED_BUCKET": "p-out", "TOTESYS_SECRET_ID": "p/t",
                       "WAREHOUSE_SECRET_ID": "p/w"}.items():
        monkeypatch.setenv(key, value)
    import threading
    seen, release, after = {}, threading.Event(), {}

    def patient(event, context):
        seen["remaining"] = context.get_remaining_time_in_millis()
        seen["memory"] = context.memory_limit_in_mb
        return {}

    def stuck(event, context):
        s3 = boto3.client("s3")
        release.wait(10)
        try:
            s3.get_object(Bucket="p-in", Key="_state/ingest.json")
        except Exception as err:  # noqa: BLE001 - recorded for the assertion
            after["error"] = str(err)
        finally:
            after["done"] = True

    limits = terraform_values.function_limits()
    with aws_emulation.emulated_aws({}, timeouts={"transform": 0.3}):
        aws_emulation.create_buckets(("p-in", "p-out"))
        aws_emulation.deploy_pipeline("totesys")
        functions = aws_emulation._Current.enforcement.functions
        headers = {}
        aws_emulation._call_handler(patient, {}, functions["totesys-ingest"], headers)
        assert headers == {}
        timeout_ms = limits["ingest"]["timeout"] * 1000
        assert timeout_ms - 5000 < seen["remaining"] <= timeout_ms
        assert seen["memory"] == limits["ingest"]["memory_mb"]
        body = json.loads(aws_emulation._call_handler(stuck, {}, functions["totesys-transform"], headers))
        assert headers == {"x-amz-function-error": "Unhandled"}
        assert body["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 0.30 seconds" in body["errorMessage"]
        release.set()
        for _ in range(100):
            if after.get("done"):
                break
            threading.Event().wait(0.05)
        # the function's next invocation (a retry) runs in a new sandbox, with working credentials
        body = json.loads(aws_emulation._call_handler(
            lambda event, context: boto3.client("s3").list_objects_v2(Bucket="p-out")["KeyCount"], {},
            functions["totesys-transform"], {}))
        assert body == 0
    assert "AccessDenied" in after["error"] and "after its invocation timed out" in after["error"]


def test_function_limits_are_read_from_terraform():
    limits = terraform_values.function_limits()
    assert limits["transform"] == {"timeout": 600, "memory_mb": 2048, "ephemeral_storage_mb": 512}


def _stack(tmp_path, text):
    (tmp_path / "main.tf").write_text(textwrap.dedent(text))
    return tmp_path


@pytest.mark.parametrize("body, named", [
    ('resources = [data.aws_ssm_parameter.unknown.value]',
     "data.aws_ssm_parameter.unknown.value is not known"),
    ('resources = [lookup(local.m, "a")]', "function lookup() is not supported"),
    ('resources = [local.missing]', "local.missing is not defined"),
    ('resources = [var.nodefault]', "var.nodefault has no default"),
    ('resources = ["*"]\n    condition {\n      test = "StringEquals"\n    }', "['condition']"),
])
def test_rendering_fails_loudly_on_what_it_cannot_resolve(tmp_path, body, named):
    directory = _stack(tmp_path, f'''
        variable "nodefault" {{}}
        locals {{
          m = {{ a = "b" }}
        }}
        data "aws_iam_policy_document" "ingest" {{
          statement {{
            actions = ["s3:GetObject"]
            {body}
          }}
        }}
        ''')
    evaluator = terraform_values.Evaluator(terraform_values.load_stack(directory), {})
    with pytest.raises(RenderError, match=named.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        terraform_values.render_policy(evaluator, "ingest")


def test_rendering_resolves_what_the_policies_use(tmp_path):
    directory = _stack(tmp_path, '''
        variable "tables" {
          default = ["a", "b"]
        }
        locals {
          arn   = "arn:${data.aws_partition.current.partition}:s3:::${var.tables[0]}"
          extra = jsondecode("{\\"x\\": [\\"_k\\"]}")
        }
        data "aws_iam_policy_document" "ingest" {
          statement {
            sid       = "S"
            actions   = ["s3:PutObject"]
            resources = concat([for t in var.tables : "${local.arn}/${t}/*"], flatten([local.extra.x]))
          }
        }
        ''')
    evaluator = terraform_values.Evaluator(terraform_values.load_stack(directory),
                                           {"data.aws_partition.current.partition": "aws"})
    assert terraform_values.render_policy(evaluator, "ingest") == {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Sid": "S", "Action": ["s3:PutObject"],
         "Resource": ["arn:aws:s3:::a/a/*", "arn:aws:s3:::a/b/*", "_k"]}]}


# -- AWS's other limits -----------------------------------------------------------------------------

def test_limits_are_errors_over_and_warnings_within_80_percent():
    from totesys_local.limits import check
    limits = {"memory_mb": 1000, "ephemeral_storage_mb": 512}
    assert check("load", limits, request_bytes=2, response_bytes=100, peak_mb=799, tmp_mb=0) == []
    warned = check("load", limits, request_bytes=210 * 1024, response_bytes=100, peak_mb=850, tmp_mb=420)
    assert [(f.level, f.message.split(" ")[1]) for f in warned] == [
        ("warning", "state"), ("warning", "memory"), ("warning", "ephemeral")]
    assert warned[1].message == "load: memory 850.0 MB of 1,000.0 MB (85%): within 20% of AWS's limit"
    over = check("transform", limits, response_bytes=7 * 1024 * 1024, peak_mb=1001, tmp_mb=513)
    assert [(f.level, f.error_type) for f in over] == [
        ("error", "Function.ResponseSizeTooLarge"), ("error", "States.DataLimitExceeded"),
        ("error", "Runtime.OutOfMemory"), ("error", "Runtime.ExitError")]
    assert over[0].message == "transform: response 7.0 MiB of 6.0 MiB: over AWS's limit"


@pytest.mark.parametrize("size, error_type, warned", [
    (100, None, False), (220 * 1024, None, True), (300 * 1024, "States.DataLimitExceeded", False),
    (7 * 1024 * 1024, "Function.ResponseSizeTooLarge", False)])
def test_an_invocation_result_over_a_payload_limit_fails_as_aws_fails_it(aws_env, monkeypatch, size,
                                                                         error_type, warned):
    for key, value in {"INGEST_BUCKET": "p-in", "PROCESSED_BUCKET": "p-out", "TOTESYS_SECRET_ID": "p/t",
                       "WAREHOUSE_SECRET_ID": "p/w"}.items():
        monkeypatch.setenv(key, value)
    with aws_emulation.emulated_aws({}):
        aws_emulation.deploy_pipeline("totesys")
        function = aws_emulation._Current.enforcement.functions["totesys-transform"]
        headers = {}
        body = json.loads(aws_emulation._call_handler(lambda event, context: {"blob": "x" * size}, {},
                                                      function, headers))
        findings = aws_emulation.limit_findings()
    if error_type:
        assert headers and body["errorType"] == error_type and body["errorMessage"].startswith("transform: ")
    else:
        assert not headers and len(body["blob"]) == size
        assert [f.level for f in findings] == (["warning"] if warned else [])
