"""AWS on a laptop: moto for S3, Secrets Manager, SNS, IAM, Lambda and Step Functions, with the
project's real state machine definition interpreted by moto's engine and every Lambda task
dispatched in-process to the real handlers (moto cannot run Lambda code without Docker).

One gap of moto's engine is filled here, the way AWS behaves: AWS SDK integrations
(``arn:aws:states:::aws-sdk:<service>:<action>``) take and return PascalCase member names
(``StateMachineArn``, ``Executions[].ExecutionArn``) whatever the service's own casing; moto 5.2 passes
them to boto3 unchanged, so a camelCase API such as Step Functions' own would fail there but not in AWS.

What AWS enforces, the emulation enforces too:
- IAM: ``deploy_pipeline`` gives each function and the state machine the role main-terraform/iam.tf
  deploys, its inline policy rendered from the HCL (totesys_local.terraform_values); every handler runs
  with its role's session credentials and every AWS call it (or the state machine) makes is authorised
  against that policy (totesys_local.iam). A refusal fails the stage like AccessDenied in AWS, and
  ``denials()`` gives it as one line naming the stage, the action and the resource.
- Limits: the event and the result of every invocation against Step Functions' 256 KiB state
  input/output and Lambda's 6 MB response: over, the invocation fails with the error AWS gives
  (States.DataLimitExceeded, Function.ResponseSizeTooLarge); within 80%, ``limit_findings`` warns.
- Timeouts: each handler gets a ``context`` whose ``get_remaining_time_in_millis`` counts down from its
  Terraform timeout (main-terraform/variables.tf); a handler still running then is ended as Lambda ends
  it: the state machine sees the function error ``Sandbox.Timedout`` and the invocation's credentials
  are revoked (a Python thread cannot be killed: it stops at its next AWS call, or when the database
  cancels its statement, whose timeouts follow the remaining time: utils.db.connection).
"""
import datetime
import functools
import io
import json
import logging
import os
import ssl
import threading
import time
import traceback
import zipfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, TypedDict, Union, cast
from unittest import mock

import boto3
import botocore.client
import botocore.httpsession
import botocore.session
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
    StateTaskServiceAwsSdk)

from totesys_local.asl import ASL_TEMPLATE, render
from totesys_local.retry_clock import compressed_retry_waits
from totesys_local.iam import ENGINE_ACCESS_KEY, Enforcement, Identity
from totesys_local.limits import Finding, check as check_limits
from totesys_local.terraform_values import function_limits, render_policies
from utils.db.connection import credentials_from_url

STAGES = ("ingest", "transform", "load")
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
REGION = "eu-west-2"
# moto accepts any credentials; these can never reach a real account.
_FAKE = "testing"  # nosec B105 - moto's placeholder credential, not a secret
FAKE_CREDENTIALS = dict.fromkeys(
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"), _FAKE)
# Variables that would send boto3 somewhere else than the emulated account: remove them.
UNSET_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_PROFILE")
# A Lambda handler: (event, context) -> result.
Handler = Callable[[Any, Any], Any]


class Alert(TypedDict):
    """A message published to the alert topic (``published_alerts``)."""
    subject: Optional[str]
    message: str


# -- the emulated account: the one set-up of tests, the runner and the benchmarks --------------------

def account_environment(region: str = REGION, **variables: str) -> Dict[str, str]:
    """The environment variables of a process that uses the emulated account: fake credentials, the
    region, and ``variables`` (bucket names, secret ids, ...). Remove UNSET_VARIABLES too."""
    return {**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": region, "AWS_REGION": region, **variables}


def create_buckets(names: Iterable[str], region: str = REGION) -> Any:
    """Create the buckets ``names`` (versioned, like the real ones) in the running emulation."""
    s3 = boto3.client("s3", region_name=region)
    for name in names:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3


@contextmanager
def operator() -> Iterator[None]:
    """Inside a handler (a test's wrapper that changes the account, e.g. ends a simulated failover): act
    as the account's operator, not as the function's role, for the calls of clients created here."""
    thread = threading.current_thread()
    saved = getattr(thread, "_lambda_credentials", None)
    thread._lambda_credentials = None
    try:
        yield
    finally:
        thread._lambda_credentials = saved


def put_credentials_secret(secret_id: str, database: Union[str, Mapping[str, Any]], region: str = REGION,
                           **override: Any) -> None:
    """Store the credentials of ``database`` (a postgresql:// URL or a credentials dict), with the
    ``override`` keys replaced, as the JSON secret ``secret_id`` (a new version when it exists). An
    operator's action, also when called from inside a handler (``operator``)."""
    credentials = credentials_from_url(database) if isinstance(database, str) else dict(database)
    value = json.dumps(dict(credentials, **override))
    with operator():
        secrets = boto3.client("secretsmanager", region_name=region)
    try:
        secrets.create_secret(Name=secret_id, SecretString=value)
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=secret_id, SecretString=value)


def render_definition(arns: Mapping[str, str], template_path: Union[str, Path] = ASL_TEMPLATE) -> str:
    """The deployable definition: the template with its placeholders filled from ``arns``."""
    try:
        return render(Path(template_path).read_text(), arns)
    except KeyError as err:
        raise ValueError(f"state machine template: {err.args[0]}") from None


def _function_name(name_or_arn: str) -> str:
    return name_or_arn.split(":function:")[-1].split(":")[0]


def _lambda_context(function: "_Function", deadline: float) -> SimpleNamespace:
    """What Lambda passes a handler: its remaining time counts down to ``deadline`` (time.monotonic)."""
    def remaining() -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    return SimpleNamespace(function_name=function.name, aws_request_id=f"local-{time.time_ns()}",
                           memory_limit_in_mb=function.limits["memory_mb"], invoked_function_arn=function.arn,
                           get_remaining_time_in_millis=remaining)


class _Current:
    """The running emulation's IAM enforcement (None outside ``emulated_aws`` or before a deploy)."""
    enforcement: Optional[Enforcement] = None
    timeouts: Dict[str, float] = {}
    findings: List[Finding] = []


_ORIGINAL_API_CALL = botocore.client.BaseClient._make_api_call


def _authorised_api_call(client: Any, operation_name: str, api_params: Mapping[str, Any]) -> Any:
    """Every boto3 call in the process: authorised by the emulated IAM, then made."""
    enforcement = _Current.enforcement
    if enforcement is not None:
        enforcement.authorise(client, operation_name, api_params)
    return _ORIGINAL_API_CALL(client, operation_name, api_params)


def denials() -> List[str]:
    """The AccessDenied lines of the running emulation so far, oldest first."""
    return list(_Current.enforcement.denials) if _Current.enforcement is not None else []


def role_may(stage: str, action: str, resource: str) -> bool:
    """Whether the deployed role of ``stage`` may ``action`` on ``resource`` (the emulated IAM's answer)."""
    return cast(Enforcement, _Current.enforcement).may(stage, action, resource)  # set by deploy_pipeline


# The sandbox of an invocation is the handler's thread and every thread it starts (its thread pools):
# a client created there gets the function's role credentials, as Lambda's environment gives them. Other
# threads (the test or `totesys run` around the execution, moto's engine) keep their own credentials.
_ORIGINAL_THREAD_START = threading.Thread.start
_ORIGINAL_CREATE_CLIENT = botocore.session.Session.create_client


def _start_in_sandbox(thread: threading.Thread) -> None:
    """threading.Thread.start: a thread started inside an invocation belongs to its sandbox."""
    thread._lambda_credentials = getattr(threading.current_thread(), "_lambda_credentials", None)
    return _ORIGINAL_THREAD_START(thread)


def _create_client_in_sandbox(session: botocore.session.Session, service_name: str, *args: Any,
                              **kwargs: Any) -> Any:
    """botocore's create_client: inside an invocation, signed with the function's role credentials."""
    credentials = getattr(threading.current_thread(), "_lambda_credentials", None)
    if credentials is not None and not kwargs.get("aws_access_key_id"):
        kwargs.update(aws_access_key_id=credentials["AccessKeyId"],
                      aws_secret_access_key=credentials["SecretAccessKey"],
                      aws_session_token=credentials["SessionToken"])
    return _ORIGINAL_CREATE_CLIENT(session, service_name, *args, **kwargs)


def _timed_out(function: "_Function", seconds: float) -> Dict[str, str]:
    """The function error Lambda returns for an invocation that ran past its timeout."""
    return {"errorType": "Sandbox.Timedout",
            "errorMessage": f"{function.name}: Task timed out after {seconds:.2f} seconds"}


def _call_handler(handler: Handler, event: Any, function: "_Function",
                  response_headers: Dict[str, str]) -> bytes:
    """Run ``handler`` under ``function``'s role and timeout; the response body Lambda would give."""
    seconds = _Current.timeouts.get(function.stage, function.limits["timeout"])
    deadline = time.monotonic() + seconds
    outcome: Dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = handler(event, _lambda_context(function, deadline))
        except Exception as err:  # noqa: BLE001 - reported to Step Functions as Lambda does
            outcome["error"] = err

    worker = threading.Thread(target=run, name=f"lambda-{function.stage}", daemon=True)
    worker._lambda_credentials = function.credentials
    _ORIGINAL_THREAD_START(worker)
    worker.join(seconds)
    if worker.is_alive():
        _replace_sandbox(function)
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(_timed_out(function, seconds)).encode()
    if "error" in outcome:
        err = outcome["error"]
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps({"errorType": type(err).__name__, "errorMessage": str(err),
                           "stackTrace": traceback.format_tb(err.__traceback__)[-3:]}).encode()
    return _checked_response(function, event, outcome["result"], response_headers)


def _replace_sandbox(function: "_Function") -> None:
    """A timed-out invocation's sandbox is gone: its credentials stop working (the thread, which Python
    cannot kill, is refused at its next AWS call); the function's next invocation gets new ones."""
    enforcement = cast(Enforcement, _Current.enforcement)  # a deployed function: set by deploy_pipeline
    enforcement.revoked.add(function.credentials["AccessKeyId"])
    role_arn = f"arn:aws:iam::{enforcement.account_id}:role/{function.identity.role_name}"
    function.credentials = boto3.client("sts").assume_role(
        RoleArn=role_arn, RoleSessionName=f"{function.name}-{time.time_ns()}")["Credentials"]
    enforcement.identities[function.credentials["AccessKeyId"]] = function.identity


def _checked_response(function: "_Function", event: Any, result: Any,
                      response_headers: Dict[str, str]) -> bytes:
    """The response body of a handler's ``result``, or the error AWS gives when the event or the result is
    over a limit (totesys_local.limits); warnings (within 80%) are kept for ``limit_findings``."""
    body = json.dumps(result).encode()
    findings = check_limits(function.stage, function.limits,
                            request_bytes=len(json.dumps(event).encode()), response_bytes=len(body))
    _Current.findings.extend(findings)
    errors = [finding for finding in findings if finding.level == "error"]
    if errors:
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps({"errorType": errors[0].error_type, "errorMessage": errors[0].message}).encode()
    return body


def limit_findings() -> List[Finding]:
    """The limit warnings and errors of the running emulation's invocations so far (totesys_local.limits)."""
    return list(_Current.findings)


@functools.lru_cache(maxsize=None)
def _operation_model(service: str, action: str) -> Any:
    """botocore's model of an AWS SDK integration's action (``listExecutions`` -> ``ListExecutions``)."""
    return botocore.session.get_session().get_service_model(service).operation_model(
        action[0].upper() + action[1:])


def _aws_sdk_request_as_aws(self: StateTaskServiceAwsSdk, parameters: Any,
                            boto_service_name: Optional[str] = None,
                            service_action_name: Optional[str] = None) -> None:
    """PascalCase parameters -> the member names boto3 expects (moto's own helper, left unwired in 5.2)."""
    model = _operation_model(self._get_boto_service_name(), self.resource.api_action)
    self._to_boto_request(parameters, model.input_shape)


def _aws_sdk_response_as_aws(self: StateTaskServiceAwsSdk, response: Any,
                             boto_service_name: Optional[str] = None,
                             service_action_name: Optional[str] = None) -> None:
    """The boto3 response -> PascalCase member names, as AWS returns an AWS SDK integration's result."""
    model = _operation_model(self._get_boto_service_name(), self.resource.api_action)
    self._from_boto_response(response, model.output_shape)


@functools.lru_cache(maxsize=None)
def _shared_ssl_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
    """One TLS context for every boto3 client of the emulation: each client otherwise builds its own
    (~50 ms of OpenSSL set-up each, a tenth of a `totesys run` with nothing new), and under moto no request
    ever leaves the process."""
    return _create_ssl_context(*args, **kwargs)


_create_ssl_context = botocore.httpsession.create_urllib3_context


@contextmanager
def _quiet_engine() -> Iterator[None]:
    """moto's engine logs every failure a Catch handles at ERROR (on stderr, through logging's last
    resort); the runner reports a failure itself, in one line."""
    engine_log = logging.getLogger("moto.stepfunctions.parser")
    level = engine_log.level
    engine_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        engine_log.setLevel(level)


@contextmanager
def emulated_aws(handlers: Mapping[str, Handler],
                 timeouts: Optional[Mapping[str, float]] = None) -> Iterator[List[str]]:
    """Start moto (in-process) with Lambda invocations routed to ``handlers``:
    {function name: callable(event, context)}. A handler that raises produces a Lambda function
    error whose Error is the exception's class name, as in AWS, so Retry/Catch match it. Retry waits
    are compressed in time (totesys_local.retry_clock: TOTESYS_RETRY_TIME_SCALE).

    Once ``deploy_pipeline`` has run, IAM is enforced and each handler runs under its role and its
    Terraform timeout; ``timeouts`` ({stage: seconds}) shortens a stage's timeout (tests)."""
    invocations: List[str] = []

    def invoke(self: LambdaSimpleBackend, function_name: str, qualifier: Optional[str], body: Optional[str],
               headers: Any, response_headers: Dict[str, str]) -> bytes:
        name = _function_name(function_name)
        event = json.loads(body) if body else {}
        invocations.append(name)
        function = _Current.enforcement.functions.get(name) if _Current.enforcement else None
        if function is None:
            raise RuntimeError(f"function {name} has no role: deploy it with deploy_pipeline")
        return _call_handler(handlers[name], event, function, response_headers)

    previous = (_Current.enforcement, _Current.timeouts, _Current.findings)
    _Current.enforcement, _Current.timeouts, _Current.findings = None, dict(timeouts or {}), []
    try:
        with mock_aws(config=MOTO_CONFIG), mock.patch.object(LambdaSimpleBackend, "invoke", invoke), \
                _quiet_engine(), compressed_retry_waits(), \
                mock.patch.object(StateTaskServiceAwsSdk, "_normalise_parameters", _aws_sdk_request_as_aws), \
                mock.patch.object(StateTaskServiceAwsSdk, "_normalise_response", _aws_sdk_response_as_aws), \
                mock.patch.object(botocore.client.BaseClient, "_make_api_call", _authorised_api_call), \
                mock.patch.object(threading.Thread, "start", _start_in_sandbox), \
                mock.patch.object(botocore.session.Session, "create_client", _create_client_in_sandbox), \
                mock.patch.object(botocore.httpsession, "create_urllib3_context", _shared_ssl_context):
            yield invocations
    finally:
        _Current.enforcement, _Current.timeouts, _Current.findings = previous


# What the emulated deploy reads from the environment: the SSM parameters immutable-terraform publishes.
DEPLOY_VARIABLES = ("INGEST_BUCKET", "PROCESSED_BUCKET", "TOTESYS_SECRET_ID", "WAREHOUSE_SECRET_ID")


def _trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": service}}]})


def _secret_arn(secret_id: str) -> str:
    """The ARN of secret ``secret_id``, created empty when missing (immutable-terraform creates the
    secrets before main-terraform names their ARNs in the policies; the run puts the credentials)."""
    secrets = boto3.client("secretsmanager")
    try:
        return secrets.describe_secret(SecretId=secret_id)["ARN"]
    except secrets.exceptions.ResourceNotFoundException:
        return secrets.create_secret(Name=secret_id, SecretString="{}")["ARN"]


class _Function(SimpleNamespace):
    """A deployed function: name, arn, stage, limits, identity (its role) and session credentials."""


def _account_values(prefix: str, arns: Mapping[str, str], function_arns: Mapping[str, str], account_id: str,
                    region: str) -> Dict[str, Any]:
    """What Terraform learns from the account when it renders the policies (terraform_values' ``known``);
    ``function_arns``: {stage: the function's unqualified ARN} (aws_lambda_function's ``arn``)."""
    missing = [name for name in DEPLOY_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ValueError(f"deploy_pipeline needs {', '.join(missing)} in the environment (the bucket and "
                         "secret names immutable-terraform publishes)")
    ssm = "data.aws_ssm_parameter"
    return {
        "data.aws_caller_identity.current.account_id": account_id,
        "data.aws_partition.current.partition": "aws",
        f"{ssm}.ingest_bucket_name.value": os.environ["INGEST_BUCKET"],
        f"{ssm}.processed_bucket_name.value": os.environ["PROCESSED_BUCKET"],
        f"{ssm}.totesys_secret_arn.value": _secret_arn(os.environ["TOTESYS_SECRET_ID"]),
        f"{ssm}.warehouse_secret_arn.value": _secret_arn(os.environ["WAREHOUSE_SECRET_ID"]),
        # The emulation has no KMS (the local buckets are not SSE-KMS): the key's grants are not exercised.
        f"{ssm}.kms_key_arn.value": f"arn:aws:kms:{region}:{account_id}:key/local-emulation",
        "aws_lambda_function.stage": {stage: {"arn": function_arns[stage]} for stage in STAGES},
        "aws_cloudwatch_log_group.function": {
            stage: {"arn": f"arn:aws:logs:{region}:{account_id}:log-group:/aws/lambda/{prefix}-{stage}"}
            for stage in STAGES},
        "aws_sns_topic.alerts": {"arn": arns["alert_topic_arn"]},
    }


def deploy_pipeline(prefix: str = "totesys",
                    template_path: Union[str, Path] = ASL_TEMPLATE) -> Dict[str, str]:
    """Create, in the (emulated) account, what main-terraform deploys for the pipeline: a role per
    function and one for the state machine, each with its inline policy rendered from iam.tf, the three
    functions, the alert topic and the state machine; then enforce IAM for them. Returns a dict of ARNs.

    The bucket and secret names come from DEPLOY_VARIABLES in the environment (missing: ValueError)."""
    iam, sts = boto3.client("iam"), boto3.client("sts")
    roles = {stage: iam.create_role(RoleName=f"{prefix}-{stage}-role",
                                    AssumeRolePolicyDocument=_trust("lambda.amazonaws.com"))["Role"]["Arn"]
             for stage in STAGES}
    roles["state_machine"] = iam.create_role(RoleName=f"{prefix}-pipeline-role",
                                             AssumeRolePolicyDocument=_trust("states.amazonaws.com"))
    roles["state_machine"] = roles["state_machine"]["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("README.txt", "handlers run in-process")
    lam = boto3.client("lambda")
    arns: Dict[str, str] = {}
    unqualified: Dict[str, str] = {}
    for stage in STAGES:
        # Published, and the definition names the version (qualified ARN), as main-terraform does.
        function = lam.create_function(
            FunctionName=f"{prefix}-{stage}", Runtime="python3.12", Role=roles[stage], Publish=True,
            Handler=f"{stage}.lambda_handler", Code={"ZipFile": code.getvalue()})
        unqualified[stage] = function["FunctionArn"]
        arns[f"{stage}_function_arn"] = f"{function['FunctionArn']}:{function['Version']}"
    arns["alert_topic_arn"] = boto3.client("sns").create_topic(Name=f"{prefix}-alerts")["TopicArn"]
    region, account_id = arns["alert_topic_arn"].split(":")[3:5]
    policies = render_policies(_account_values(prefix, arns, unqualified, account_id, region))
    for name, role_arn in roles.items():
        iam.put_role_policy(RoleName=role_arn.split("/")[-1], PolicyName=f"{name}-least-privilege",
                            PolicyDocument=json.dumps(policies[name]))
    state_machine = boto3.client("stepfunctions").create_state_machine(
        name=f"{prefix}-pipeline", roleArn=roles["state_machine"],
        definition=render_definition(arns, template_path))
    arns["state_machine_arn"] = state_machine["stateMachineArn"]
    _enforce(prefix, arns, roles, sts, account_id, region)
    return arns


def _enforce(prefix: str, arns: Mapping[str, str], roles: Mapping[str, str], sts: Any, account_id: str,
             region: str) -> None:
    """From now on, authorise every call of the functions' and the state machine's roles."""
    enforcement = Enforcement(account_id, region)
    limits = function_limits()
    for stage in STAGES:
        identity = Identity(stage, roles[stage].split("/")[-1], stage)
        credentials = sts.assume_role(RoleArn=roles[stage],
                                      RoleSessionName=f"{prefix}-{stage}")["Credentials"]
        enforcement.identities[credentials["AccessKeyId"]] = identity
        enforcement.functions[f"{prefix}-{stage}"] = _Function(
            name=f"{prefix}-{stage}", arn=arns[f"{stage}_function_arn"], stage=stage, limits=limits[stage],
            identity=identity, credentials=credentials)
    enforcement.identities[ENGINE_ACCESS_KEY] = Identity(
        "state machine", roles["state_machine"].split("/")[-1], "state_machine")
    _Current.enforcement = enforcement


def published_alerts(topic_arn: str) -> List[Alert]:
    """Messages published to an (emulated) SNS topic, oldest first."""
    from moto.sns.models import sns_backends
    account, region = topic_arn.split(":")[4], topic_arn.split(":")[3]
    topic = sns_backends[account][region].topics[topic_arn]
    return [{"subject": n[2], "message": n[1]} for n in topic.sent_notifications]


def _execution(execution_arn: str) -> Any:
    """moto's own object of an execution (the Step Functions engine's backend, read in-process)."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends
    region, account = execution_arn.split(":")[3:5]
    return stepfunctions_parser_backends[account][region].describe_execution(execution_arn)


def _history_event(event: Mapping[str, Any]) -> Dict[str, Any]:
    """A history event as get_execution_history returns it through boto3 (timestamp a datetime)."""
    return dict(event, timestamp=datetime.datetime.fromisoformat(event["timestamp"]))


def wait_for_execution(execution_arn: str, on_event: Optional[Callable[[Dict[str, Any]], None]] = None,
                       timeout: float = 900, poll: float = 0.02) -> Dict[str, Any]:
    """Wait until an execution ends; call ``on_event(event)`` for each new history event, as
    get_execution_history would return it. Returns describe_execution's answer.

    Reads the engine's objects in-process rather than polling the API: get_execution_history
    serialises the whole history on every poll (~0.3 s per run) while competing for the GIL with the
    execution's thread; here a poll is a length check."""
    execution = _execution(execution_arn)
    seen = 0
    deadline = time.monotonic() + timeout
    while True:
        running = execution.exec_status == "RUNNING"
        env = execution.exec_worker.env if execution.exec_worker else None
        if on_event is not None and env is not None:
            events = env.event_manager._history_event_list  # appended under the engine's lock
            for event in events[seen:len(events)]:
                on_event(_history_event(event))
                seen += 1
        if not running:
            return boto3.client("stepfunctions", region_name=execution_arn.split(":")[3]) \
                .describe_execution(executionArn=execution_arn)
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {execution_arn} still running after {timeout} s")
        time.sleep(poll)


# -- one account for many runs (the local emulator, totesys_local.daemon) -----------------------------

class KeptAccount:
    """An emulated account with the pipeline deployed once and kept for many runs (the local emulator).

    Between runs it forgets everything a run leaves in memory: the S3 objects (the state folder on disk
    holds them; ``lazy_s3`` serves them again), the secrets, the alerts and the finished executions, so
    its memory does not grow with the runs it served."""

    def __init__(self, prefix: str, arns: Dict[str, str]) -> None:
        self.prefix = prefix
        self.arns = arns
        self.region, self.account_id = arns["state_machine_arn"].split(":")[3:5]

    def clear(self) -> None:
        from moto.s3.models import s3_backends
        from moto.secretsmanager.models import secretsmanager_backends
        from moto.sns.models import sns_backends
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends
        from moto.stepfunctions.parser.utils import TMP_THREADS
        s3_backends[self.account_id]["global"].reset()  # also closes the objects' spooled files
        # The secrets stay (the roles' policies name their ARNs); only their current value is kept.
        for secret in secretsmanager_backends[self.account_id][self.region].secrets.values():
            current = secret.default_version_id
            if current in secret.versions:
                secret.versions = {current: secret.versions[current]}
        topics = sns_backends[self.account_id][self.region].topics
        topics[self.arns["alert_topic_arn"]].sent_notifications.clear()
        for state_machine in stepfunctions_parser_backends[self.account_id][self.region].state_machines:
            state_machine.executions.clear()
        TMP_THREADS[:] = [thread for thread in TMP_THREADS if thread.is_alive()]
        if _Current.enforcement is not None:
            _Current.enforcement.denials.clear()
        _Current.findings.clear()


_kept: Optional[KeptAccount] = None


@contextmanager
def kept_pipeline(handlers: Mapping[str, Handler], prefix: str = "totesys") -> Iterator[KeptAccount]:
    """Start the emulation with Lambda routed to ``handlers``, deploy the pipeline once, and make every
    ``pipeline_account(prefix)`` inside this context use that account. Yields the KeptAccount."""
    global _kept
    with emulated_aws(handlers):
        _kept = KeptAccount(prefix, deploy_pipeline(prefix))
        try:
            yield _kept
        finally:
            _kept = None


@contextmanager
def pipeline_account(handlers: Mapping[str, Handler], prefix: str = "totesys") -> Iterator[Dict[str, str]]:
    """The pipeline's ARNs in an emulated account for ONE run: the kept account of an enclosing
    ``kept_pipeline`` (its handlers serve; cleared before and after the run), else a fresh emulation
    with Lambda routed to ``handlers`` and the pipeline deployed now (~0.4 s)."""
    kept = _kept
    if kept is not None and kept.prefix == prefix:
        kept.clear()
        try:
            yield kept.arns
        finally:
            kept.clear()
        return
    with emulated_aws(handlers):
        yield deploy_pipeline(prefix)
