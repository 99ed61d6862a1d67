"""The deploy role's policy (docs/deploy-role.json, what README and docs/DEPLOY.md tell a user to attach)
allows every call Terraform makes for every resource type both stacks declare, and no more than it says.

REQUIRED is the table: resource or data source type -> the IAM actions the AWS provider (~> 5.80) calls to
create, read, update, tag and delete it, each on a resource ARN named as the stacks' defaults name it,
with the request context AWS evaluates conditions against (the provider's default_tags put
Project = <project> on every create). The provider documentation does not list IAM actions: they come
from its resource implementations (hashicorp/terraform-provider-aws, internal/service/*: the API calls of
each Create/Read/Update/Delete) mapped to actions with AWS's Service Authorization Reference. A new
resource type in a stack without a row here fails the test, so the table cannot silently fall behind.

The policy is evaluated, not grepped: an action is allowed when an Allow statement matches the action,
the resource ARN (IAM wildcards) and every condition, and no Deny statement matches.
"""
import fnmatch
import json
import re

import pytest

from tests.infra.hcl import IMMUTABLE, MAIN, ROOT, default, load_file, load_stack

POLICY_PATH = ROOT / "docs" / "deploy-role.json"
ACCOUNT = "123456789012"
STATE_BUCKET = "totesys-tfstate-123456789012"
REGION = "eu-west-2"
PANDAS_ACCOUNT = "336392948345"  # AWS's publishing account of the managed layer in eu-west-2


def _stacks():
    return {"immutable": load_stack(IMMUTABLE), "main": load_stack(MAIN)}


STACKS = _stacks()
PROJECT = default(STACKS["main"], "project")
SSM_PREFIX = default(STACKS["main"], "ssm_prefix")
SECRET_PREFIX = default(STACKS["immutable"], "secret_name_prefix")

# Resource ARNs as the default deploy names them.
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ALIAS = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/{PROJECT}-data"
BUCKETS = [f"arn:aws:s3:::{PROJECT}-ingest-20261202101500000000000001",
           f"arn:aws:s3:::{PROJECT}-processed-20261202101500000000000002"]
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{SECRET_PREFIX}/db-credentials-AbCdEf"
PARAMETER = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{SSM_PREFIX}/kms-key-arn"
PANDAS_PARAMETER = (f"arn:aws:ssm:{REGION}::parameter/aws/service/aws-sdk-pandas/3.11.0/py3.12/x86_64/"
                    "layer-arn")
FUNCTION = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{PROJECT}-ingest"
ALIAS_OF_FUNCTION = f"{FUNCTION}:live"
LAYER = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{PROJECT}-dependencies"
PANDAS_LAYER = f"arn:aws:lambda:{REGION}:{PANDAS_ACCOUNT}:layer:AWSSDKPandas-Python312:16"
LOG_GROUPS = [f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{PROJECT}-ingest",
              f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/vendedlogs/states/{PROJECT}-pipeline:*"]
ALARM = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{PROJECT}-pipeline-ExecutionsTimedOut"
DASHBOARD = f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/{PROJECT}-pipeline"
RULE = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{PROJECT}-pipeline-schedule"
ROLES = [f"arn:aws:iam::{ACCOUNT}:role/{PROJECT}-{name}-role" for name in ("ingest", "pipeline", "schedule")]
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:{PROJECT}-pipeline-alerts"
SUBSCRIPTION = f"{TOPIC}:0f2a6c8e-1b1d-4f6e-9a55-3f4b5c6d7e8f"
STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{PROJECT}-pipeline"
ANY = "*"

CREATING = {"aws:RequestTag/Project": PROJECT}  # default_tags on every create
TAGGED = {"aws:ResourceTag/Project": PROJECT}  # the resource, once created


def _rows(actions, resources, context=None):
    resources = resources if isinstance(resources, list) else [resources]
    return [(action, resource, context or {}) for action in actions.split() for resource in resources]


S3_BUCKET_READ = ("s3:ListBucket s3:GetBucketTagging s3:GetBucketPolicy s3:GetBucketAcl s3:GetBucketCORS "
                  "s3:GetBucketWebsite s3:GetBucketVersioning s3:GetAccelerateConfiguration "
                  "s3:GetBucketRequestPayment s3:GetBucketLogging s3:GetLifecycleConfiguration "
                  "s3:GetReplicationConfiguration s3:GetEncryptionConfiguration "
                  "s3:GetBucketObjectLockConfiguration")
KMS_USE_FOR_SECRETS = _rows("kms:GenerateDataKey kms:Decrypt", KEY, TAGGED)
PASS_ROLE = {service: _rows("iam:PassRole", ROLES, {"iam:PassedToService": f"{service}.amazonaws.com"})
             for service in ("lambda", "states", "events")}

REQUIRED = {
    # -- no AWS call, or one every principal may make
    "data.aws_iam_policy_document": [],
    "data.aws_partition": [],
    "data.archive_file": [],
    "data.aws_caller_identity": _rows("sts:GetCallerIdentity", ANY),
    # -- immutable-terraform
    "aws_kms_key": (_rows("kms:CreateKey kms:TagResource", ANY, CREATING)
                    + _rows("kms:DescribeKey kms:GetKeyPolicy kms:PutKeyPolicy kms:GetKeyRotationStatus "
                            "kms:EnableKeyRotation kms:ListResourceTags kms:TagResource kms:UntagResource "
                            "kms:UpdateKeyDescription kms:ScheduleKeyDeletion", KEY, TAGGED)),
    "aws_kms_alias": (_rows("kms:CreateAlias kms:UpdateAlias kms:DeleteAlias", ALIAS)
                      + _rows("kms:CreateAlias kms:UpdateAlias kms:DeleteAlias", KEY, TAGGED)
                      + _rows("kms:ListAliases", ANY)),
    "aws_s3_bucket": (_rows("s3:CreateBucket s3:PutBucketTagging s3:DeleteBucket " + S3_BUCKET_READ, BUCKETS)
                      # force_destroy_buckets: every version of every object first
                      + _rows("s3:ListBucketVersions", BUCKETS)
                      + _rows("s3:DeleteObject s3:DeleteObjectVersion",
                              [f"{bucket}/sales_order/2026/x.parquet" for bucket in BUCKETS])),
    "aws_s3_bucket_versioning": _rows("s3:PutBucketVersioning s3:GetBucketVersioning", BUCKETS),
    "aws_s3_bucket_server_side_encryption_configuration":
        _rows("s3:PutEncryptionConfiguration s3:GetEncryptionConfiguration", BUCKETS),
    "aws_s3_bucket_public_access_block":  # DeletePublicAccessBlock is authorised as the Put action
        _rows("s3:PutBucketPublicAccessBlock s3:GetBucketPublicAccessBlock", BUCKETS),
    "aws_s3_bucket_lifecycle_configuration":  # DeleteBucketLifecycle is authorised as the Put action
        _rows("s3:PutLifecycleConfiguration s3:GetLifecycleConfiguration", BUCKETS),
    "aws_s3_bucket_policy": _rows("s3:PutBucketPolicy s3:GetBucketPolicy s3:DeleteBucketPolicy", BUCKETS),
    "aws_secretsmanager_secret":
        _rows("secretsmanager:CreateSecret secretsmanager:TagResource secretsmanager:DescribeSecret "
              "secretsmanager:GetResourcePolicy secretsmanager:UpdateSecret secretsmanager:UntagResource "
              "secretsmanager:DeleteSecret", SECRET),
    "aws_secretsmanager_secret_version":
        _rows("secretsmanager:PutSecretValue secretsmanager:GetSecretValue secretsmanager:DescribeSecret "
              "secretsmanager:ListSecretVersionIds secretsmanager:UpdateSecretVersionStage", SECRET)
        + KMS_USE_FOR_SECRETS,
    "aws_ssm_parameter":
        _rows("ssm:PutParameter ssm:AddTagsToResource ssm:GetParameter ssm:ListTagsForResource "
              "ssm:RemoveTagsFromResource ssm:DeleteParameter", PARAMETER)
        + _rows("ssm:DescribeParameters", ANY),
    # -- main-terraform: lookups
    "data.aws_ssm_parameter": _rows("ssm:GetParameter", [PARAMETER, PANDAS_PARAMETER]),
    "data.aws_secretsmanager_secret_version": _rows("secretsmanager:GetSecretValue", SECRET)
    + _rows("kms:Decrypt", KEY, TAGGED),
    "data.aws_subnet": _rows("ec2:DescribeSubnets", ANY),
    # -- main-terraform: the pipeline
    "aws_iam_role":
        _rows("iam:CreateRole iam:TagRole iam:GetRole iam:ListRoleTags iam:UpdateRole "
              "iam:UpdateAssumeRolePolicy iam:UntagRole iam:ListRolePolicies iam:ListAttachedRolePolicies "
              "iam:ListInstanceProfilesForRole iam:DeleteRolePolicy iam:DeleteRole", ROLES),
    "aws_iam_role_policy": _rows("iam:PutRolePolicy iam:GetRolePolicy iam:DeleteRolePolicy", ROLES),
    "aws_lambda_function":
        _rows("lambda:CreateFunction lambda:TagResource lambda:GetFunction lambda:GetFunctionConfiguration "
              "lambda:GetFunctionCodeSigningConfig lambda:GetFunctionConcurrency "
              "lambda:ListVersionsByFunction "
              "lambda:PublishVersion lambda:UpdateFunctionCode lambda:UpdateFunctionConfiguration "
              "lambda:PutFunctionConcurrency lambda:DeleteFunctionConcurrency lambda:ListTags "
              "lambda:UntagResource lambda:DeleteFunction", FUNCTION)
        + _rows("lambda:GetLayerVersion", [f"{LAYER}:3", PANDAS_LAYER])
        # the environment is encrypted with the data key (kms_key_arn)
        + _rows("kms:Encrypt kms:Decrypt kms:CreateGrant", KEY, TAGGED)
        + PASS_ROLE["lambda"]
        # with subnet_ids: Lambda checks the subnets and security groups with the caller's permissions
        + _rows("ec2:DescribeSubnets ec2:DescribeSecurityGroups ec2:DescribeVpcs", ANY),
    "aws_lambda_alias": _rows("lambda:CreateAlias lambda:GetAlias lambda:UpdateAlias lambda:DeleteAlias",
                              ALIAS_OF_FUNCTION),
    # verify.tf: EventBridge may invoke the verify function (its resource-based policy)
    "aws_lambda_permission": _rows("lambda:AddPermission lambda:GetPolicy lambda:RemovePermission", FUNCTION),
    "aws_lambda_layer_version":
        _rows("lambda:PublishLayerVersion", LAYER) + _rows("lambda:GetLayerVersion lambda:DeleteLayerVersion",
                                                           f"{LAYER}:3"),
    "aws_cloudwatch_log_group":
        _rows("logs:CreateLogGroup logs:TagResource logs:TagLogGroup logs:PutRetentionPolicy "
              "logs:DeleteRetentionPolicy logs:AssociateKmsKey logs:DisassociateKmsKey "
              "logs:ListTagsForResource "
              "logs:ListTagsLogGroup logs:UntagResource logs:UntagLogGroup logs:DeleteLogGroup", LOG_GROUPS)
        + _rows("logs:DescribeLogGroups", ANY),
    "aws_cloudwatch_log_metric_filter":
        _rows("logs:PutMetricFilter logs:DescribeMetricFilters logs:DeleteMetricFilter", LOG_GROUPS),
    "aws_cloudwatch_metric_alarm":
        _rows("cloudwatch:PutMetricAlarm cloudwatch:TagResource cloudwatch:ListTagsForResource "
              "cloudwatch:UntagResource cloudwatch:DeleteAlarms", ALARM)
        + _rows("cloudwatch:DescribeAlarms", ANY),
    "aws_cloudwatch_dashboard":
        _rows("cloudwatch:PutDashboard cloudwatch:GetDashboard cloudwatch:DeleteDashboards", DASHBOARD),
    "aws_sns_topic":
        _rows("sns:CreateTopic sns:TagResource sns:GetTopicAttributes sns:SetTopicAttributes "
              "sns:ListTagsForResource sns:UntagResource sns:DeleteTopic", TOPIC),
    "aws_sns_topic_subscription":
        _rows("sns:Subscribe", TOPIC)
        + _rows("sns:GetSubscriptionAttributes sns:SetSubscriptionAttributes sns:Unsubscribe", SUBSCRIPTION),
    "aws_sfn_state_machine":
        _rows("states:CreateStateMachine states:TagResource states:DescribeStateMachine "
              "states:UpdateStateMachine states:ListStateMachineVersions states:ListTagsForResource "
              "states:UntagResource states:DeleteStateMachine", STATE_MACHINE)
        + _rows("states:ValidateStateMachineDefinition", ANY)
        + PASS_ROLE["states"]
        # logging_configuration: vended log delivery to the log group
        + _rows("logs:CreateLogDelivery logs:GetLogDelivery logs:UpdateLogDelivery logs:DeleteLogDelivery "
                "logs:ListLogDeliveries logs:PutResourcePolicy logs:DescribeResourcePolicies "
                "logs:DescribeLogGroups", ANY),
    "aws_cloudwatch_event_rule":
        _rows("events:PutRule events:TagResource events:DescribeRule events:ListTagsForResource "
              "events:EnableRule events:DisableRule events:UntagResource events:DeleteRule", RULE),
    "aws_cloudwatch_event_target":
        _rows("events:PutTargets events:ListTargetsByRule events:RemoveTargets", RULE) + PASS_ROLE["events"],
    # -- main-terraform with subnet_ids (VPC mode)
    "aws_security_group":  # Terraform removes the default allow-all egress rule of a new group
        _rows("ec2:CreateSecurityGroup ec2:CreateTags ec2:RevokeSecurityGroupEgress "
              "ec2:DescribeSecurityGroups "
              "ec2:DescribeSecurityGroupRules ec2:DescribeNetworkInterfaces ec2:DeleteTags "
              "ec2:DeleteSecurityGroup", ANY),
    "aws_vpc_security_group_ingress_rule":
        _rows("ec2:AuthorizeSecurityGroupIngress ec2:CreateTags ec2:DescribeSecurityGroupRules "
              "ec2:ModifySecurityGroupRules ec2:RevokeSecurityGroupIngress", ANY),
    "aws_vpc_endpoint":
        _rows("ec2:CreateVpcEndpoint ec2:CreateTags ec2:DescribeVpcEndpoints ec2:DescribePrefixLists "
              "ec2:DescribeVpcEndpointServices ec2:ModifyVpcEndpoint ec2:DeleteVpcEndpoints", ANY),
}

# The backend (both stacks): state objects and their S3-native lock files.
STATE_ROWS = _rows("s3:ListBucket", f"arn:aws:s3:::{STATE_BUCKET}") + _rows(
    "s3:GetObject s3:PutObject s3:DeleteObject",
    [f"arn:aws:s3:::{STATE_BUCKET}/totesys/{key}" for key in ("main.tfstate", "main.tfstate.tflock")])


# -- a small IAM evaluator ---------------------------------------------------------------------------------

def _listed(value):
    return value if isinstance(value, list) else [value]


def load_policy(text=None):
    """docs/deploy-role.json with its placeholders filled as a user would (ACCOUNT_ID, TF_STATE_BUCKET)."""
    text = POLICY_PATH.read_text() if text is None else text
    return json.loads(text.replace("ACCOUNT_ID", ACCOUNT).replace("TF_STATE_BUCKET", STATE_BUCKET))


def _matches(pattern, value, case_sensitive=True):
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


def _condition_holds(condition, context):
    """Every operator/key of ``condition`` holds in ``context`` (a key absent from it does not hold)."""
    for operator, tests in condition.items():
        if operator not in ("StringEquals", "StringLike"):
            raise AssertionError(f"the evaluator does not know {operator}: extend it")
        for key, wanted in tests.items():
            if key not in context:
                return False
            compare = (lambda a, b: a == b) if operator == "StringEquals" else _matches
            if not any(compare(value, context[key]) for value in _listed(wanted)):
                return False
    return True


def _statement_applies(statement, action, resource, context):
    return (any(_matches(pattern, action, case_sensitive=False) for pattern in _listed(statement["Action"]))
            and any(_matches(pattern, resource) for pattern in _listed(statement["Resource"]))
            and _condition_holds(statement.get("Condition", {}), context))


def allowed(policy, action, resource, context):
    statements = policy["Statement"]
    if any(s["Effect"] == "Deny" and _statement_applies(s, action, resource, context) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and _statement_applies(s, action, resource, context)
               for s in statements)


def _types_in_the_stacks():
    return sorted({kind for stack in STACKS.values() for kind in stack["resource"]}
                  | {f"data.{kind}" for stack in STACKS.values() for kind in stack["data"]})


# -- the tests -----------------------------------------------------------------------------------------------

def test_every_resource_type_of_both_stacks_has_a_row_in_the_table():
    missing = [kind for kind in _types_in_the_stacks() if kind not in REQUIRED]
    assert missing == [], f"add the IAM actions of {missing} to REQUIRED (and to docs/deploy-role.json)"


@pytest.mark.parametrize("kind", _types_in_the_stacks())
def test_the_deploy_role_allows_what_terraform_calls_for(kind):
    policy = load_policy()
    denied = [(action, resource, context) for action, resource, context in REQUIRED.get(kind, [])
              if not allowed(policy, action, resource, context)]
    assert denied == [], f"{kind}: docs/deploy-role.json does not allow {denied}"


def test_the_deploy_role_reaches_the_state_bucket_and_its_lock_files():
    policy = load_policy()
    assert [row for row in STATE_ROWS if not allowed(policy, *row)] == []


@pytest.mark.parametrize("directory", [IMMUTABLE, MAIN], ids=["immutable", "main"])
def test_every_stack_tags_its_creates_with_the_project_the_conditions_expect(directory):
    (provider,) = [block["aws"] for block in load_file(directory / "main.tf")["provider"]]
    assert provider["default_tags"][0]["tags"]["Project"] == "${var.project}"
    assert default(load_stack(directory), "project") == PROJECT == "totesys"  # the policy's literal


@pytest.mark.parametrize("action, resource, context", [
    ("kms:CreateKey", ANY, {}),  # a key without the project's tag
    ("kms:TagResource", KEY, {}),  # another key (untagged)
    ("kms:ScheduleKeyDeletion", KEY, {"aws:ResourceTag/Project": "payroll"}),
    ("iam:PassRole", ROLES[0], {"iam:PassedToService": "ec2.amazonaws.com"}),
    ("iam:PassRole", ROLES[0], {}),
    ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin", {"iam:PassedToService": "lambda.amazonaws.com"}),
    ("s3:PutObject", f"arn:aws:s3:::{PROJECT}-ingest-x/sales_order/2026/x.parquet", {}),  # no data writes
    ("s3:DeleteBucket", "arn:aws:s3:::someone-elses-bucket", {}),
    ("secretsmanager:GetSecretValue", SECRET.replace(f"{SECRET_PREFIX}/", "payroll/"), {}),
    ("ssm:PutParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/payroll/x", {}),
    ("lambda:UpdateFunctionCode", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:payroll", {}),
    ("iam:AttachRolePolicy", ROLES[0], {}),  # no managed policies (AdministratorAccess) on the roles
])
def test_the_deploy_role_refuses_what_it_does_not_need(action, resource, context):
    assert not allowed(load_policy(), action, resource, context)


def test_actions_are_listed_not_wildcarded_except_ec2_reads():
    policy = load_policy()
    wildcards = {action for s in policy["Statement"] for action in _listed(s["Action"]) if "*" in action}
    assert wildcards == {"ec2:Describe*"}


def test_pass_role_only_to_the_pipeline_services():
    statements = [s for s in load_policy()["Statement"] if "iam:PassRole" in _listed(s["Action"])]
    assert len(statements) == 1
    services = statements[0]["Condition"]["StringEquals"]["iam:PassedToService"]
    assert sorted(services) == ["events.amazonaws.com", "lambda.amazonaws.com", "states.amazonaws.com"]


def test_the_evaluator_refuses_an_unknown_condition_operator():
    statement = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                 "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
    policy = load_policy(json.dumps({"Statement": [statement]}))
    with pytest.raises(AssertionError, match="IpAddress"):
        allowed(policy, "s3:GetObject", "arn:aws:s3:::b/k", {})


def test_the_docs_point_at_the_policy_file_and_hold_no_other_copy():
    readme = (ROOT / "README.md").read_text()
    deploy = (ROOT / "docs" / "DEPLOY.md").read_text()
    assert "docs/deploy-role.json" in readme and "deploy-role.json" in deploy
    assert not re.search(r'"Statement"\s*:', readme + deploy), "one policy: docs/deploy-role.json"
