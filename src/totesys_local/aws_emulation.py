"""AWS on a laptop: moto for S3, Secrets Manager, SNS, IAM, Lambda and Step Functions, with the
project's real state machine definition interpreted by moto's engine and every Lambda task
dispatched in-process to the real handlers (moto cannot run Lambda code without Docker).

One gap of moto's engine is filled here, the way AWS behaves: AWS SDK integrations
(``arn:aws:states:::aws-sdk:<service>:<action>``) take and return PascalCase member names
(``StateMachineArn``, ``Executions[].ExecutionArn``) whatever the service's own casing; moto 5.2 passes
them to boto3 unchanged, so a camelCase API such as Step Functions' own would fail there but not in AWS.
"""
import datetime
import functools
import io
import json
import logging
import time
import traceback
import zipfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import boto3
import botocore.httpsession
import botocore.session
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
    StateTaskServiceAwsSdk)

from totesys_local.asl import ASL_TEMPLATE, render
from totesys_local.retry_clock import compressed_retry_waits
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


# -- the emulated account: the one set-up of tests, the runner and the benchmarks --------------------

def account_environment(region=REGION, **variables):
    """The environment variables of a process that uses the emulated account: fake credentials, the
    region, and ``variables`` (bucket names, secret ids, ...). Remove UNSET_VARIABLES too."""
    return {**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": region, "AWS_REGION": region, **variables}


def create_buckets(names, region=REGION):
    """Create the buckets ``names`` (versioned, like the real ones) in the running emulation."""
    s3 = boto3.client("s3", region_name=region)
    for name in names:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3


def put_credentials_secret(secret_id, database, region=REGION, **override):
    """Store the credentials of ``database`` (a postgresql:// URL or a credentials dict), with the
    ``override`` keys replaced, as the JSON secret ``secret_id`` (a new version when it exists)."""
    credentials = credentials_from_url(database) if isinstance(database, str) else dict(database)
    value = json.dumps(dict(credentials, **override))
    secrets = boto3.client("secretsmanager", region_name=region)
    try:
        secrets.create_secret(Name=secret_id, SecretString=value)
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=secret_id, SecretString=value)


def render_definition(arns, template_path=ASL_TEMPLATE):
    """The deployable definition: the template with its placeholders filled from ``arns``."""
    try:
        return render(Path(template_path).read_text(), arns)
    except KeyError as err:
        raise ValueError(f"state machine template: {err.args[0]}") from None


def _function_name(name_or_arn):
    return name_or_arn.split(":function:")[-1].split(":")[0]


def _lambda_context(function_name):
    return SimpleNamespace(function_name=function_name, aws_request_id=f"local-{time.time_ns()}",
                           memory_limit_in_mb=1024, invoked_function_arn=function_name,
                           get_remaining_time_in_millis=lambda: 900_000)


@functools.lru_cache(maxsize=None)
def _operation_model(service, action):
    """botocore's model of an AWS SDK integration's action (``listExecutions`` -> ``ListExecutions``)."""
    return botocore.session.get_session().get_service_model(service).operation_model(
        action[0].upper() + action[1:])


def _aws_sdk_request_as_aws(self, parameters, boto_service_name=None, service_action_name=None):
    """PascalCase parameters -> the member names boto3 expects (moto's own helper, left unwired in 5.2)."""
    model = _operation_model(self._get_boto_service_name(), self.resource.api_action)
    self._to_boto_request(parameters, model.input_shape)


def _aws_sdk_response_as_aws(self, response, boto_service_name=None, service_action_name=None):
    """The boto3 response -> PascalCase member names, as AWS returns an AWS SDK integration's result."""
    model = _operation_model(self._get_boto_service_name(), self.resource.api_action)
    self._from_boto_response(response, model.output_shape)


@functools.lru_cache(maxsize=None)
def _shared_ssl_context(*args, **kwargs):
    """One TLS context for every boto3 client of the emulation: each client otherwise builds its own
    (~50 ms of OpenSSL set-up each, a tenth of a `totesys run` with nothing new), and under moto no request
    ever leaves the process."""
    return _create_ssl_context(*args, **kwargs)


_create_ssl_context = botocore.httpsession.create_urllib3_context


@contextmanager
def _quiet_engine():
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
def emulated_aws(handlers):
    """Start moto (in-process) with Lambda invocations routed to ``handlers``:
    {function name: callable(event, context)}. A handler that raises produces a Lambda function
    error whose Error is the exception's class name, as in AWS, so Retry/Catch match it. Retry waits
    are compressed in time (totesys_local.retry_clock: TOTESYS_RETRY_TIME_SCALE)."""
    invocations = []

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        name = _function_name(function_name)
        event = json.loads(body) if body else {}
        invocations.append(name)
        try:
            result = handlers[name](event, _lambda_context(name))
        except Exception as err:  # noqa: BLE001 - reported to Step Functions as Lambda does
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(err).__name__, "errorMessage": str(err),
                               "stackTrace": traceback.format_tb(err.__traceback__)[-3:]}).encode()
        return json.dumps(result).encode()

    with mock_aws(config=MOTO_CONFIG), mock.patch.object(LambdaSimpleBackend, "invoke", invoke), \
            _quiet_engine(), compressed_retry_waits(), \
            mock.patch.object(StateTaskServiceAwsSdk, "_normalise_parameters", _aws_sdk_request_as_aws), \
            mock.patch.object(StateTaskServiceAwsSdk, "_normalise_response", _aws_sdk_response_as_aws), \
            mock.patch.object(botocore.httpsession, "create_urllib3_context", _shared_ssl_context):
        yield invocations


def deploy_pipeline(prefix="totesys", template_path=ASL_TEMPLATE):
    """Create, in the (emulated) account, what main-terraform deploys for the pipeline: an IAM role,
    the three functions, the alert topic and the state machine. Returns a dict of ARNs."""
    iam = boto3.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "lambda.amazonaws.com"}}]}
    role = iam.create_role(RoleName=f"{prefix}-local-role",
                           AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("README.txt", "handlers run in-process")
    lam = boto3.client("lambda")
    arns = {}
    for stage in STAGES:
        # Published, and the definition names the version (qualified ARN), as main-terraform does.
        function = lam.create_function(
            FunctionName=f"{prefix}-{stage}", Runtime="python3.12", Role=role, Publish=True,
            Handler=f"{stage}.lambda_handler", Code={"ZipFile": code.getvalue()})
        arns[f"{stage}_function_arn"] = f"{function['FunctionArn']}:{function['Version']}"
    arns["alert_topic_arn"] = boto3.client("sns").create_topic(Name=f"{prefix}-alerts")["TopicArn"]
    state_machine = boto3.client("stepfunctions").create_state_machine(
        name=f"{prefix}-pipeline", roleArn=role, definition=render_definition(arns, template_path))
    arns["state_machine_arn"] = state_machine["stateMachineArn"]
    return arns


def published_alerts(topic_arn):
    """Messages published to an (emulated) SNS topic, oldest first."""
    from moto.sns.models import sns_backends
    account, region = topic_arn.split(":")[4], topic_arn.split(":")[3]
    topic = sns_backends[account][region].topics[topic_arn]
    return [{"subject": n[2], "message": n[1]} for n in topic.sent_notifications]


def _execution(execution_arn):
    """moto's own object of an execution (the Step Functions engine's backend, read in-process)."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends
    region, account = execution_arn.split(":")[3:5]
    return stepfunctions_parser_backends[account][region].describe_execution(execution_arn)


def _history_event(event):
    """A history event as get_execution_history returns it through boto3 (timestamp a datetime)."""
    return dict(event, timestamp=datetime.datetime.fromisoformat(event["timestamp"]))


def wait_for_execution(execution_arn, on_event=None, timeout=900, poll=0.02):
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

    def __init__(self, prefix, arns):
        self.prefix = prefix
        self.arns = arns
        self.region, self.account_id = arns["state_machine_arn"].split(":")[3:5]

    def clear(self):
        from moto.s3.models import s3_backends
        from moto.secretsmanager.models import secretsmanager_backends
        from moto.sns.models import sns_backends
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends
        from moto.stepfunctions.parser.utils import TMP_THREADS
        s3_backends[self.account_id]["global"].reset()  # also closes the objects' spooled files
        secretsmanager_backends[self.account_id][self.region].reset()
        topics = sns_backends[self.account_id][self.region].topics
        topics[self.arns["alert_topic_arn"]].sent_notifications.clear()
        for state_machine in stepfunctions_parser_backends[self.account_id][self.region].state_machines:
            state_machine.executions.clear()
        TMP_THREADS[:] = [thread for thread in TMP_THREADS if thread.is_alive()]


_kept = None


@contextmanager
def kept_pipeline(handlers, prefix="totesys"):
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
def pipeline_account(handlers, prefix="totesys"):
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
