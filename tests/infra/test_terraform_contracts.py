"""Cross-checks between the Terraform stacks and the code they deploy (offline: HCL parsed, not planned)."""
import ast
import json
import re
import uuid

import pytest

from tests.infra.hcl import ASL_TEMPLATE, IMMUTABLE, MAIN, SRC, default, load_file, load_stack
from utils.config import DEFAULT_TOTESYS_SECRET_ID, DEFAULT_WAREHOUSE_SECRET_ID
from utils.catalog.source import SOURCE_TABLES

# Variables the code reads that the deployment must NOT set: AWS_ENDPOINT_URL points boto3 at a local
# endpoint (tests and the local runner); TOTESYS_LOG_FILE sends logs to a file instead of stdout
# (local runner); AWS_* region/credentials are provided by the Lambda runtime itself.
# PGPASSWORD/PGPASSFILE: libpq's password sources for URLs without a password (local runs; in Lambda the
# credentials secret carries the password).
NOT_DEPLOYED = {"AWS_ENDPOINT_URL", "TOTESYS_LOG_FILE", "AWS_REGION", "AWS_DEFAULT_REGION",
                "PGPASSWORD", "PGPASSFILE"}

# The buckets each stage touches (docs/DESIGN.md, stage contracts) and what it may do there.
EXPECTED_BUCKET_ACCESS = {
    "ingest": {"ingest": {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}},
    "transform": {"ingest": {"s3:ListBucket", "s3:GetObject"},
                  "processed": {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}},
    # the load writes one object, the rebuild pointer (tests/integration/rebuild/test_rebuild_on_aws.py)
    "load": {"processed": {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}},
}
EXPECTED_SECRETS = {"ingest": {"totesys"}, "transform": set(), "load": {"warehouse"}}
BUCKET_LOCALS = {"ingest": "local.ingest_bucket_arn", "processed": "local.processed_bucket_arn"}
SECRET_LOCALS = {"totesys": "local.totesys_secret_arn", "warehouse": "local.warehouse_secret_arn"}


def env_vars_read_by(path):
    """Names passed as string literals to os.environ.get/[...], os.getenv or config's _required()."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        target = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            dotted = ast.unparse(func)
            if dotted in ("os.environ.get", "os.getenv", "_required", "_env_int", "environ.get", "getenv"):
                target = node.args[0]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            target = node.slice
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            names.add(target.value)
    return names


def deployed_sources():
    return [path for path in SRC.rglob("*.py") if "totesys_local" not in path.parts]


def test_env_var_scanner_finds_the_config_variables():
    # Guards the scanner itself: config.py reads these through os.environ.get, _required() and _env_int().
    found = env_vars_read_by(SRC / "utils" / "config.py")
    assert {"INGEST_BUCKET", "PROCESSED_BUCKET", "TOTESYS_SECRET_ID", "INGEST_OVERLAP_SECONDS"} <= found


def test_every_environment_variable_the_code_reads_is_set(main_stack):
    read = set().union(*(env_vars_read_by(path) for path in deployed_sources()))
    environment = main_stack["locals"]["function_environment"]
    function = main_stack["resource"]["aws_lambda_function"]["stage"]
    assert function["environment"][0]["variables"] == "${local.function_environment}"
    missing = sorted(read - NOT_DEPLOYED - set(environment))
    assert missing == [], f"read by src/ but not set in lambda.tf: {missing}"
    assert not (NOT_DEPLOYED & set(environment)), "local-only variables must not be deployed"


def test_handlers_exist_in_src(main_stack):
    functions = main_stack["locals"]["functions"]
    assert set(functions) == {"ingest", "transform", "load"}
    for stage, spec in functions.items():
        module_name, func_name = spec["handler"].rsplit(".", 1)
        assert module_name == stage
        module = SRC / f"{module_name}.py"
        if not module.exists():
            pytest.fail(f"handler module {module} for {stage} does not exist")
        tree = ast.parse(module.read_text())
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert func_name in defined, f"{module} defines no {func_name}"


def test_function_sizing_runtime_and_concurrency(main_stack):
    function = main_stack["resource"]["aws_lambda_function"]["stage"]
    assert function["for_each"] == "${local.functions}"
    assert function["handler"] == "${each.value.handler}"
    assert default(main_stack, "python_runtime") == "python3.12"
    assert default(main_stack, "function_memory_mb") == {"ingest": 1024, "transform": 2048, "load": 1024}
    timeouts = default(main_stack, "function_timeout_seconds")
    assert timeouts == {"ingest": 300, "transform": 600, "load": 600}
    assert max(timeouts.values()) <= 900  # Lambda's ceiling


def test_function_zip_is_src_without_the_local_package(main_stack):
    archive = main_stack["data"]["archive_file"]["function_code"]
    assert archive["source_dir"] == "${path.module}/../src"
    assert "totesys_local/**" in archive["excludes"]
    assert "**/__pycache__/**" in archive["excludes"]


def test_layers_are_the_managed_pandas_layer_then_our_own(main_stack):
    # Lambda extracts layers in order and a later layer's files win: ours must come last (its pg8000 and
    # boto3/botocore replace the managed layer's and the runtime's).
    function = main_stack["resource"]["aws_lambda_function"]["stage"]
    assert function["layers"] == ["${local.aws_sdk_pandas_layer_arn}",
                                  "${aws_lambda_layer_version.dependencies.arn}"]


def test_source_tables_variable_matches_the_code(main_stack):
    assert default(main_stack, "source_tables") == list(SOURCE_TABLES)


def test_state_machine_template_placeholders_are_all_supplied(main_stack):
    template = ASL_TEMPLATE.read_text()
    placeholders = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", template))
    assert placeholders, "the template should reference the functions and the topic"
    machine = main_stack["resource"]["aws_sfn_state_machine"]["pipeline"]
    definition = machine["definition"]
    assert "templatefile(\"${path.module}/../state_machine/pipeline.asl.json\"" in definition
    supplied = set(re.findall(r"(\w+)\s*=", definition.split(",", 1)[1]))
    assert placeholders <= supplied, f"not supplied by state_machine.tf: {sorted(placeholders - supplied)}"
    assert supplied <= placeholders, f"supplied but unused: {sorted(supplied - placeholders)}"


def test_schedule_starts_the_state_machine_with_empty_input(main_stack):
    assert default(main_stack, "schedule_expression") == "rate(15 minutes)"
    target = main_stack["resource"]["aws_cloudwatch_event_target"]["pipeline"]
    assert target["arn"] == "${aws_sfn_state_machine.pipeline.arn}"
    assert json.loads(target["input"]) == {}


def test_critical_metric_filter_matches_json_log_level(main_stack):
    metric_filter = main_stack["resource"]["aws_cloudwatch_log_metric_filter"]["critical"]
    assert metric_filter["for_each"] == "${local.functions}"
    assert metric_filter["pattern"] == '{ $.level = "CRITICAL" }'
    alarms = main_stack["resource"]["aws_cloudwatch_metric_alarm"]
    assert alarms["critical"]["metric_name"].startswith("${aws_cloudwatch_log_metric_filter.critical[")
    assert set(alarms["executions"]["for_each"]) == {"ExecutionsFailed", "ExecutionsTimedOut"}
    subscription = main_stack["resource"]["aws_sns_topic_subscription"]["alert_email"]
    assert subscription["protocol"] == "email"


def _statements(main_stack, stage):
    return main_stack["data"]["aws_iam_policy_document"][stage]["statement"]


def _resources_text(statement):
    resources = statement["resources"]
    return resources if isinstance(resources, str) else " ".join(resources)


@pytest.mark.parametrize("stage", ["ingest", "transform", "load"])
def test_each_function_gets_exactly_its_buckets(main_stack, stage):
    granted = {}
    for statement in _statements(main_stack, stage):
        text = _resources_text(statement)
        for bucket, local_name in BUCKET_LOCALS.items():
            if local_name in text:
                granted.setdefault(bucket, set()).update(statement["actions"])
    assert granted == EXPECTED_BUCKET_ACCESS[stage]


@pytest.mark.parametrize("stage", ["ingest", "transform", "load"])
def test_each_function_gets_exactly_its_secret_and_log_group(main_stack, stage):
    secrets, log_groups = set(), set()
    for statement in _statements(main_stack, stage):
        text = _resources_text(statement)
        assert "s3:*" not in statement["actions"] and "*" not in statement["actions"]
        if any(action.startswith("secretsmanager:") for action in statement["actions"]):
            assert statement["actions"] == ["secretsmanager:GetSecretValue"]
            secrets |= {name for name, local_name in SECRET_LOCALS.items() if local_name in text}
        if any(action.startswith("logs:") for action in statement["actions"]):
            log_groups |= set(re.findall(r'function_log_group_arns\[\\?"(\w+)\\?"\]', text))
        if statement["resources"] == ["*"]:
            assert all(action.startswith("xray:") for action in statement["actions"]), statement
    assert secrets == EXPECTED_SECRETS[stage]
    assert log_groups == {stage}


# -- the write prefixes, replayed: every key a run writes, against the policies Terraform deploys --------

def _replay_env(monkeypatch, **extra):
    for key, value in {"INGEST_BUCKET": "iam-ingest", "PROCESSED_BUCKET": "iam-processed",
                       "TOTESYS_SECRET_ID": "iam/totesys", "WAREHOUSE_SECRET_ID": "iam/warehouse",
                       **extra}.items():
        monkeypatch.setenv(key, value)


def _execute(arns):
    import boto3
    from totesys_local.aws_emulation import wait_for_execution
    sfn = boto3.client("stepfunctions")
    execution = sfn.start_execution(stateMachineArn=arns["state_machine_arn"], input="{}",
                                    name=f"replay-{uuid.uuid4().hex[:12]}")
    return wait_for_execution(execution["executionArn"], timeout=300)


@pytest.mark.slow
def test_every_key_a_run_writes_is_allowed_to_its_writer_only(aws_env, monkeypatch, source_url,
                                                              warehouse_url):
    """Under the emulated IAM (the policies rendered from iam.tf): a bounded full backfill, then an
    incremental batch with an update, a hard delete and a quarantined row. Both executions succeed (every
    call allowed); then every key in both buckets is replayed: its writer's role may PutObject it, the
    other roles may not. Before, ingest's role could not write _keys/ or _deleted/, transform's neither
    _deleted/ nor _rejected/ (the first execution in AWS failed)."""
    import boto3
    from totesys_local.aws_emulation import (create_buckets, denials, deploy_pipeline, emulated_aws,
                                             put_credentials_secret, role_may)
    from totesys_local.runner import stage_handlers
    from tests.support.db import run_sql
    totesys_url = source_url  # two known rows per table (tests.support.totesys)
    run_sql(totesys_url, "UPDATE sales_order SET last_updated = now() - interval '12 hours' "
            "WHERE sales_order_id = 2")
    # A second payment, so that deleting one leaves the table non-empty; MAX_DELETE_FRACTION=1 holds only
    # a table emptied (the mass-delete guard), so the delete lands.
    columns = ("created_at, last_updated, transaction_id, counterparty_id, payment_amount, currency_id, "
               "payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number")
    values = columns.replace("transaction_id", "2")  # transaction 2 (the purchase) has no payment yet
    run_sql(totesys_url, f"INSERT INTO payment ({columns}) SELECT {values} FROM payment")  # nosec B608
    _replay_env(monkeypatch, MAX_BATCH_ROWS="1", MAX_DELETE_FRACTION="1")
    with emulated_aws(stage_handlers("totesys")) as invocations:
        create_buckets(("iam-ingest", "iam-processed"))
        put_credentials_secret("iam/totesys", totesys_url)
        put_credentials_secret("iam/warehouse", warehouse_url)
        arns = deploy_pipeline("totesys")
        first = _execute(arns)
        assert first["status"] == "SUCCEEDED", (first, denials())
        assert invocations.count("totesys-ingest") >= 2, "the full load was not bounded into rounds"
        run_sql(totesys_url, "ALTER TABLE address ALTER city DROP NOT NULL")
        run_sql(totesys_url, "UPDATE address SET city = NULL, last_updated = now() WHERE address_id = 1")
        run_sql(totesys_url, "UPDATE sales_order SET units_sold = 4242, last_updated = now() "
                "WHERE sales_order_id = 1")
        run_sql(totesys_url, "DELETE FROM payment WHERE payment_id = (SELECT min(payment_id) FROM payment)")
        second = _execute(arns)
        assert second["status"] == "SUCCEEDED", (second, denials())
        # The quarantined row, whichever round loaded it (in CDC mode each source transaction is its own
        # round under MAX_BATCH_ROWS=1, so the execution's last load need not be the one that met it).
        rejected = run_sql(warehouse_url,
                           "SELECT source_table, source_id, column_name FROM etl_rejected_rows")
        assert [tuple(row) for row in rejected] == [("address", 1, "city")]
        assert denials() == []
        s3 = boto3.client("s3")
        pages = {bucket: s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                 for bucket in ("iam-ingest", "iam-processed")}
        written = {bucket: [item["Key"] for page in bucket_pages for item in page.get("Contents", [])]
                   for bucket, bucket_pages in pages.items()}
        writers = {"iam-ingest": "ingest", "iam-processed": "transform"}
        for bucket, keys in written.items():
            for key in keys:
                arn = f"arn:aws:s3:::{bucket}/{key}"
                assert role_may(writers[bucket], "s3:PutObject", arn), arn
                others = {"ingest", "transform", "load", "state machine"} - {writers[bucket]}
                assert not [stage for stage in others if role_may(stage, "s3:PutObject", arn)], arn
    # every kind of object was written (the replay covered them all)
    kinds = {bucket: {key.split("/")[0] for key in keys} for bucket, keys in written.items()}
    assert {"_keys", "_deleted", "_batches", "_state"} | set(SOURCE_TABLES) <= kinds["iam-ingest"]
    assert {"_rejected", "_deleted", "_snapshots", "_batches", "_state", "dim_location", "fact_sales_order"} \
        <= kinds["iam-processed"]
    assert not {"_rejected", "_snapshots"} & kinds["iam-ingest"]


def test_write_prefixes_are_the_ones_the_code_uses():
    """write_prefixes.json is what the code writes under (utils.aws.layout), and iam.tf reads it."""
    from utils.aws import layout
    prefixes = json.loads((SRC / "utils" / "aws" / "write_prefixes.json").read_text())
    assert set(prefixes["ingest"].values()) == {
        layout.INGEST_MANIFESTS, layout.KEYS_PREFIX, layout.DELETED_PREFIX}
    assert set(prefixes["processed"].values()) == {
        layout.PROCESSED_MANIFESTS, layout.SNAPSHOTS_PREFIX, layout.REJECTED_PREFIX,
        layout.PROCESSED_DELETED_PREFIX, layout.GENERATIONS_PREFIX}


def test_state_machine_may_invoke_only_the_three_functions_and_publish_to_the_topic(main_stack):
    statements = main_stack["data"]["aws_iam_policy_document"]["state_machine"]["statement"]
    by_action = {}
    for statement in statements:
        for action in statement["actions"]:
            by_action[action] = _resources_text(statement)
    assert by_action["lambda:InvokeFunction"] == '${[for fn in aws_lambda_function.stage : "${fn.arn}:*"]}'
    assert by_action["sns:Publish"] == "${aws_sns_topic.alerts.arn}"
    star = {action for action, text in by_action.items() if text == "*"}
    assert all(action.startswith(("logs:", "xray:")) for action in star), star


def test_immutable_stack_creates_the_secrets_the_code_defaults_to(immutable_stack):
    prefix = default(immutable_stack, "secret_name_prefix")
    secrets = immutable_stack["locals"]["secrets"]
    names = {key: spec["name"].replace("${var.secret_name_prefix}", prefix) for key, spec in secrets.items()}
    assert names["totesys"] == DEFAULT_TOTESYS_SECRET_ID
    assert names["warehouse"] == DEFAULT_WAREHOUSE_SECRET_ID
    assert names["alert_email"] == "totesys/alert-email"
    files = {spec["file"].rsplit("/", 1)[1] for spec in secrets.values()}
    assert files == {"db_credentials.json", "warehouse_credentials.json", "email.txt"}


def test_every_ssm_parameter_main_reads_is_written_by_immutable(main_stack, immutable_stack):
    written = set(immutable_stack["locals"]["ssm_parameters"])
    parameter = immutable_stack["resource"]["aws_ssm_parameter"]["names"]
    assert parameter["name"] == "${var.ssm_prefix}/${each.key}"
    read = set()
    for name, body in main_stack["data"]["aws_ssm_parameter"].items():
        if body["name"].startswith("/aws/service/"):
            continue  # AWS's own public parameters (the managed layer's ARN)
        match = re.fullmatch(r"\$\{var\.ssm_prefix\}/([\w-]+)", body["name"])
        assert match, body["name"]
        read.add(match.group(1))
    assert read, "main-terraform should read its names from SSM"
    assert read <= written, f"read but never written: {sorted(read - written)}"
    assert default(main_stack, "ssm_prefix") == default(immutable_stack, "ssm_prefix")
    assert default(main_stack, "region") == default(immutable_stack, "region")


def test_buckets_are_versioned_encrypted_private_tls_only_with_lifecycle(immutable_stack):
    resources = immutable_stack["resource"]
    assert set(resources["aws_s3_bucket"]) == {"ingest", "processed"}
    for kind in ("aws_s3_bucket_versioning", "aws_s3_bucket_server_side_encryption_configuration",
                 "aws_s3_bucket_public_access_block", "aws_s3_bucket_lifecycle_configuration",
                 "aws_s3_bucket_policy"):
        (body,) = resources[kind].values()
        assert body["for_each"] == "${local.data_buckets}", kind
    assert resources["aws_s3_bucket_versioning"]["data"]["versioning_configuration"][0]["status"] == "Enabled"
    access = resources["aws_s3_bucket_public_access_block"]["data"]
    flags = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    assert all(access[key] is True for key in flags)
    (tls,) = immutable_stack["data"]["aws_iam_policy_document"]["tls_only"]["statement"]
    assert tls["effect"] == "Deny"
    assert tls["condition"][0]["variable"] == "aws:SecureTransport"


@pytest.mark.parametrize("directory", [IMMUTABLE, MAIN])
def test_outputs_hold_no_secret_values(directory):
    outputs = load_stack(directory)["output"]
    assert outputs
    for name, body in outputs.items():
        value = json.dumps(body["value"])
        assert "secret_string" not in value and "secret_version" not in value, name
        assert "alert_email" not in value, name


def test_backends_are_partial_s3_with_distinct_keys():
    keys = set()
    for directory in (IMMUTABLE, MAIN):
        (terraform,) = load_file(directory / "versions.tf")["terraform"]
        (backend,) = terraform["backend"]
        settings = backend["s3"]
        assert "bucket" not in settings and "region" not in settings  # given at init time
        keys.add(settings["key"])
    assert len(keys) == 2
