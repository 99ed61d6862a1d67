"""Issue 14 (deploys on any account, private databases over verified TLS, retries, one alert) and the
Terraform items of issue 10, checked on the HCL, the ASL template, the Makefile, the workflow and the docs.
Offline: HCL is parsed, never planned (the AWS provider cannot be downloaded here)."""
import ast
import json
import re
import subprocess

import pytest
import yaml

from tests.infra.hcl import ASL_TEMPLATE, IMMUTABLE, MAIN, ROOT, SRC, default, load_stack
from utils.catalog.source import SOURCE_TABLES
from utils.catalog.warehouse import WAREHOUSE_TABLES

ASL = json.loads(ASL_TEMPLATE.read_text())
SSL_MODES = {"disable", "require", "verify-full"}
RDS_BUNDLE_ON_LAMBDA = "/opt/certs/rds-global-bundle.pem"
RDS_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
DATABASES = {"totesys": "TOTESYS", "warehouse": "WAREHOUSE"}


def make_dry_run(*targets, **env):
    result = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env}, check=True)
    return result.stdout


# -- 1. deploys on a fresh account -----------------------------------------------------------------------

def test_no_function_reserves_concurrency_by_default(main_stack):
    variable = main_stack["variable"]["function_reserved_concurrency"]
    assert variable["default"] == {"ingest": -1, "transform": -1, "load": -1}
    # Lambda's rule, stated correctly: a reservation may not leave fewer than 10 unreserved executions.
    assert "fewer than 10 unreserved" in variable["description"]
    function = main_stack["resource"]["aws_lambda_function"]["stage"]
    assert function["reserved_concurrent_executions"] == "${var.function_reserved_concurrency[each.key]}"


# -- 2. optional VPC ------------------------------------------------------------------------------------

def test_vpc_is_optional_and_off_by_default(main_stack):
    assert default(main_stack, "subnet_ids") == [] and default(main_stack, "security_group_ids") == []
    (condition,) = main_stack["variable"]["security_group_ids"]["validation"]
    assert "var.subnet_ids" in condition["condition"], "subnets and security groups are set together"
    assert main_stack["locals"]["in_vpc"] == "${length(var.subnet_ids) > 0}"
    function = main_stack["resource"]["aws_lambda_function"]["stage"]
    (dynamic,) = function["dynamic"]
    vpc = dynamic["vpc_config"]
    assert vpc["for_each"] == "${local.in_vpc ? [1] : []}"
    assert vpc["content"] == [{"subnet_ids": "${var.subnet_ids}",
                               "security_group_ids": "${var.security_group_ids}"}]
    assert "vpc_config" not in function, "a static vpc_config would put every deploy in a VPC"


def test_functions_in_a_vpc_may_manage_their_network_interfaces(main_stack):
    (statement,) = main_stack["data"]["aws_iam_policy_document"]["vpc_access"]["statement"]
    assert {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
            "ec2:DeleteNetworkInterface"} <= set(statement["actions"])
    attachment = main_stack["resource"]["aws_iam_role_policy"]["vpc_access"]
    assert attachment["for_each"] == "${local.in_vpc ? local.functions : {}}"
    assert attachment["role"] == "${aws_iam_role.function[each.key].id}"
    assert attachment["policy"] == "${data.aws_iam_policy_document.vpc_access.json}"
    depends = main_stack["resource"]["aws_lambda_function"]["stage"]["depends_on"]
    assert "${aws_iam_role_policy.vpc_access}" in depends


def aws_clients_of_deployed_code():
    """Service names passed to boto3.client(...) in the code Lambda runs."""
    names = set()
    for path in SRC.rglob("*.py"):
        if "totesys_local" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "boto3.client" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
    return names


def test_vpc_endpoints_cover_every_aws_service_the_functions_call(main_stack):
    endpoints = main_stack["resource"]["aws_vpc_endpoint"]
    services = {}
    for name, body in endpoints.items():
        assert body["count"] == "${local.vpc_endpoints ? 1 : 0}", name
        match = re.fullmatch(r"com\.amazonaws\.\$\{var\.region\}\.([a-z0-9-]+)", body["service_name"])
        assert match, body["service_name"]
        services[match.group(1)] = body
    called = aws_clients_of_deployed_code()
    assert called >= {"s3", "secretsmanager"}, "the scanner should find the functions' clients"
    assert called <= set(services), f"no endpoint for {sorted(called - set(services))}"
    assert services["s3"]["vpc_endpoint_type"] == "Gateway"
    assert services["s3"]["route_table_ids"] == "${var.vpc_route_table_ids}"
    interface = services["secretsmanager"]
    assert interface["vpc_endpoint_type"] == "Interface" and interface["private_dns_enabled"] is True
    assert main_stack["locals"]["vpc_endpoints"] == "${local.in_vpc && var.create_vpc_endpoints}"
    assert default(main_stack, "create_vpc_endpoints") is True


def test_interface_endpoint_admits_https_from_the_functions_only(main_stack):
    rule = main_stack["resource"]["aws_vpc_security_group_ingress_rule"]["vpc_endpoints_https"]
    assert rule["for_each"] == "${local.vpc_endpoints ? toset(var.security_group_ids) : toset([])}"
    assert rule["referenced_security_group_id"] == "${each.value}"
    assert (rule["ip_protocol"], rule["from_port"], rule["to_port"]) == ("tcp", 443, 443)
    interface = main_stack["resource"]["aws_vpc_endpoint"]["secretsmanager"]
    assert interface["security_group_ids"] == ["${aws_security_group.vpc_endpoints[0].id}"]


def test_lambda_in_vpc_check_is_skipped_only_with_its_reason():
    text = (MAIN / "lambda.tf").read_text()
    (skip,) = re.findall(r"#checkov:skip=CKV_AWS_117:(.*)", text)
    assert "optional" in skip and "subnet_ids" in skip


# -- 3. TLS settings --------------------------------------------------------------------------------------

def test_tls_mode_and_ca_bundle_reach_every_function(main_stack):
    environment = main_stack["locals"]["function_environment"]
    for key, prefix in DATABASES.items():
        assert environment[f"{prefix}_SSLMODE"] == f'${{var.db_ssl_mode["{key}"]}}'
        assert environment[f"{prefix}_SSLROOTCERT"] == f'${{var.db_ssl_root_cert["{key}"]}}'
    assert default(main_stack, "db_ssl_mode") == {"totesys": "verify-full", "warehouse": "verify-full"}
    assert default(main_stack, "db_ssl_root_cert") == {"totesys": RDS_BUNDLE_ON_LAMBDA,
                                                       "warehouse": RDS_BUNDLE_ON_LAMBDA}
    (validation,) = main_stack["variable"]["db_ssl_mode"]["validation"]
    assert set(re.findall(r'"([a-z-]+)"', validation["condition"])) >= SSL_MODES


def test_make_layer_ships_the_rds_bundle_where_the_functions_look_for_it(main_stack):
    out = make_dry_run("layer")
    relative = RDS_BUNDLE_ON_LAMBDA.removeprefix("/opt/")  # a layer's files land under /opt
    assert RDS_BUNDLE_URL in out and f"--output layers/{relative}" in out
    assert "--proto '=https'" in out and "curl --fail" in out
    # The layer zip is layers/ (minus requirements.txt and zips): layers/certs/ goes in, and a deploy
    # without the bundle stops at plan time rather than failing every connection.
    archive = main_stack["data"]["archive_file"]["dependencies_layer"]
    assert archive["source_dir"] == "${path.module}/../layers"
    assert not [pattern for pattern in archive["excludes"] if pattern.startswith("certs")]
    (precondition,) = main_stack["resource"]["aws_lambda_layer_version"]["dependencies"]["lifecycle"][0][
        "precondition"]
    assert "fileexists" in precondition["condition"] and "make layer" in precondition["error_message"]
    assert "layers/certs/" in (ROOT / ".gitignore").read_text().split()


# -- 4. state machine: overlapping executions, IAM --------------------------------------------------------

def test_state_machine_may_list_its_own_executions_only(main_stack):
    machine = main_stack["resource"]["aws_sfn_state_machine"]["pipeline"]
    assert machine["name"] == "${local.state_machine_name}"
    arn = main_stack["locals"]["state_machine_arn"]
    assert arn.endswith(":stateMachine:${local.state_machine_name}")
    statements = main_stack["data"]["aws_iam_policy_document"]["state_machine"]["statement"]
    (listing,) = [s for s in statements if "states:ListExecutions" in s["actions"]]
    assert listing["actions"] == ["states:ListExecutions"]
    assert listing["resources"] == ["${local.state_machine_arn}"]
    integration = ASL["States"][ASL["StartAt"]]
    first_task = ASL["States"][integration["Next"]]
    assert first_task["Resource"] == "arn:aws:states:::aws-sdk:sfn:listExecutions"


# -- 5. one e-mail per failed execution -------------------------------------------------------------------

def emailing_alarms(stack):
    """{alarm resource name (with for_each key): alarm_actions expression} for alarms that reach the topic."""
    alarms = {}
    for name, body in stack["resource"]["aws_cloudwatch_metric_alarm"].items():
        keys = body.get("for_each")
        if isinstance(keys, dict):
            for key, value in keys.items():
                actions = body["alarm_actions"]
                if isinstance(actions, str) and "each.value.email ?" in actions:
                    actions = ["${aws_sns_topic.alerts.arn}"] if value["email"] else []
                alarms[f"{name}[{key}]"] = actions
        else:
            alarms[name] = body.get("alarm_actions", [])
    return {name: actions for name, actions in alarms.items() if actions}


def test_exactly_the_documented_alarms_send_email(main_stack):
    assert set(emailing_alarms(main_stack)) == {"unreported_failure", "executions[ExecutionsTimedOut]",
                                                "warehouse_freshness", "verify_mismatches", "verify_errors",
                                                "deletions_held", "cdc_retained_wal"}
    critical = main_stack["resource"]["aws_cloudwatch_metric_alarm"]["critical"]
    assert critical["alarm_actions"] == [], "a failed stage's e-mail is NotifyFailure's, not this alarm's"


def test_the_unreported_failure_alarm_skips_exactly_what_notify_failure_reported(main_stack):
    notify = ASL["States"]["NotifyFailure"]
    fail = ASL["States"][notify["Next"]]
    assert fail["Type"] == "Fail"
    assert main_stack["locals"]["reported_failure_error"] == fail["Error"]
    metric_filter = main_stack["resource"]["aws_cloudwatch_log_metric_filter"]["unreported_failure"]
    assert metric_filter["log_group_name"] == "${aws_cloudwatch_log_group.state_machine.name}"
    assert metric_filter["pattern"] == \
        '{ $.type = "ExecutionFailed" && $.details.error != "${local.reported_failure_error}" }'
    # Every other Fail state is an unreported failure: it must not carry NotifyFailure's error name.
    other_fails = [state["Error"] for name, state in ASL["States"].items()
                   if state["Type"] == "Fail" and name != notify["Next"]]
    assert other_fails and fail["Error"] not in other_fails
    logging = main_stack["resource"]["aws_sfn_state_machine"]["pipeline"]["logging_configuration"][0]
    assert logging["level"] in ("ERROR", "ALL") and logging["include_execution_data"] is True
    assert isinstance(ASL.get("TimeoutSeconds"), int), "without a timeout ExecutionsTimedOut never fires"


def test_alerts_are_documented_where_the_issue_asks():
    readme, design = (ROOT / "README.md").read_text(), (ROOT / "docs" / "DESIGN.md").read_text()
    for text in (readme, design):
        section = text[text.index("### Alerts") if "### Alerts" in text else text.index("## Alerts"):]
        for needle in ("NotifyFailure", "unreported-failure", "ExecutionsTimedOut", "CRITICAL", "ERROR"):
            assert needle in section[:4000], needle


# -- 6. the SDK the code was tested with ------------------------------------------------------------------

def test_own_layer_description_states_its_real_purpose(main_stack):
    layer = main_stack["resource"]["aws_lambda_layer_version"]["dependencies"]
    assert "boto3" in layer["description"] and "pg8000 1.31.6" in layer["description"]
    assert len(layer["description"]) <= 256  # Lambda's limit
    header = (ROOT / "layers" / "requirements.txt").read_text()
    assert "AFTER" in header and "IfMatch" in header


# -- 7. managed layer from SSM, lifecycle, tfvars, deploy role, links -------------------------------------

def test_managed_layer_arn_comes_from_aws_public_parameter_or_a_full_arn(main_stack):
    parameter = main_stack["data"]["aws_ssm_parameter"]["aws_sdk_pandas_layer"]
    assert parameter["name"] == ("/aws/service/aws-sdk-pandas/${var.aws_sdk_pandas_version}/"
                                 '${replace(var.python_runtime, "python", "py")}/x86_64/layer-arn')
    assert parameter["count"] == '${var.aws_sdk_pandas_layer_arn == "" ? 1 : 0}'
    assert re.fullmatch(r"\d+\.\d+\.\d+", default(main_stack, "aws_sdk_pandas_version"))
    assert default(main_stack, "aws_sdk_pandas_layer_arn") == ""
    arn = main_stack["locals"]["aws_sdk_pandas_layer_arn"]
    assert "var.aws_sdk_pandas_layer_arn" in arn and "data.aws_ssm_parameter.aws_sdk_pandas_layer[0]" in arn
    for path in MAIN.glob("*.tf"):
        assert "336392948345" not in path.read_text(), f"{path.name} hard-codes the publishing account"


def test_lifecycle_moves_only_table_data_to_colder_storage(immutable_stack):
    assert default(immutable_stack, "source_tables") == list(SOURCE_TABLES)
    assert default(immutable_stack, "warehouse_tables") == list(WAREHOUSE_TABLES)
    prefixes = immutable_stack["locals"]["table_prefixes"]
    assert prefixes == {"ingest": '${[for table in var.source_tables : "${table}/"]}',
                        "processed": '${[for table in var.warehouse_tables : "${table}/"]}'}
    lifecycle = immutable_stack["resource"]["aws_s3_bucket_lifecycle_configuration"]["data"]
    (dynamic,) = lifecycle["dynamic"]
    table_rule = dynamic["rule"]
    assert table_rule["for_each"] == "${local.table_prefixes[each.key]}"
    (content,) = table_rule["content"]
    assert content["filter"] == [{"prefix": "${rule.value}"}]
    assert {t["storage_class"] for t in content["transition"]} == {"STANDARD_IA", "GLACIER_IR"}
    for rule in lifecycle["rule"]:  # the static rules span the whole bucket: they must not transition
        assert "transition" not in rule, rule["id"]
    assert not any(table.startswith("_") for table in list(SOURCE_TABLES) + list(WAREHOUSE_TABLES))


def test_a_tfvars_file_reaches_both_stacks_from_make():
    out = make_dry_run("deploy", TF_STATE_BUCKET="state-bucket", TF_VARS_FILE="prod.tfvars")
    var_file = f'-var-file="{ROOT / "prod.tfvars"}"'
    applies = [line for line in out.splitlines() if " apply " in line]
    assert len(applies) == 2 and all(var_file in line for line in applies)
    out = make_dry_run("destroy", TF_STATE_BUCKET="state-bucket", TF_VARS_FILE="prod.tfvars")
    assert var_file in out
    assert "-var-file" not in make_dry_run("deploy", TF_STATE_BUCKET="state-bucket")


def test_ci_passes_variables_to_both_plans():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    deploy = workflow["jobs"]["deploy"]
    assert deploy["env"]["TF_VARS_FILE"]
    (write,) = [s for s in deploy["steps"] if "TFVARS" in s.get("env", {})]
    assert write["env"]["TFVARS"].startswith("${{ secrets.") and "$TF_VARS_FILE" in write["run"]
    plans = [s["run"] for s in deploy["steps"] if " plan " in s.get("run", "")]
    assert len(plans) == 2 and all('-var-file="$GITHUB_WORKSPACE/$TF_VARS_FILE"' in run for run in plans)


def test_pull_requests_validate_both_stacks_without_a_backend():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert "pull_request" in workflow[True]
    runs = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    assert "make tf-validate" in [run.strip() for run in runs]
    out = make_dry_run("tf-validate")
    for stack in ("immutable-terraform", "main-terraform"):
        assert f"terraform -chdir={stack} init -backend=false" in out
        assert f"terraform -chdir={stack} validate" in out


# The deploy role's policy: tests/infra/test_deploy_role.py evaluates docs/deploy-role.json.


def markdown_links(path):
    text = path.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text):
        if not re.match(r"[a-z]+:|#", target):
            yield target.split("#")[0]


@pytest.mark.parametrize("document", ["README.md", "docs/DESIGN.md", "docs/DEPLOY.md",
                                      "docs/BENCHMARKS.md"])
def test_no_dead_relative_links(document):
    path = ROOT / document
    assert path.is_file(), f"{document} missing"
    dead = [target for target in markdown_links(path) if not (path.parent / target).exists()]
    assert dead == []


@pytest.mark.parametrize("directory", [IMMUTABLE, MAIN])
def test_every_docs_path_in_terraform_comments_exists(directory):
    for path in directory.glob("*.tf"):
        for target in re.findall(r"\b(docs/[\w./-]+\.md)\b", path.read_text()):
            assert (ROOT / target).is_file(), f"{path.name} points to missing {target}"
    assert "docs/DEPLOY.md" in (directory / "main.tf").read_text()


def test_deploy_doc_states_the_code_contract_for_round_two():
    text = (ROOT / "docs" / "DEPLOY.md").read_text()
    for needle in ("TOTESYS_SSLMODE", "TOTESYS_SSLROOTCERT", "WAREHOUSE_SSLMODE", "WAREHOUSE_SSLROOTCERT",
                   "verify-full", RDS_BUNDLE_ON_LAMBDA, RDS_BUNDLE_URL, "ERROR", "CRITICAL", "TF_VARS_FILE"):
        assert needle in text, needle


# -- issue 10: Terraform layout ---------------------------------------------------------------------------

@pytest.mark.parametrize("directory", [IMMUTABLE, MAIN])
def test_both_stacks_use_the_same_file_names(directory):
    names = {path.name for path in directory.glob("*.tf")}
    assert {"main.tf", "variables.tf", "versions.tf", "outputs.tf"} <= names
    assert not names & {"var.tf", "vars.tf"}
    assert "terraform {" in (directory / "versions.tf").read_text()
    assert "terraform {" not in (directory / "main.tf").read_text()


@pytest.mark.parametrize("directory", [IMMUTABLE, MAIN])
def test_every_output_and_variable_is_described(directory):
    stack = load_stack(directory)
    for kind in ("output", "variable"):
        undescribed = [name for name, body in stack[kind].items() if not body.get("description")]
        assert undescribed == [], f"{kind}s without a description: {undescribed}"
