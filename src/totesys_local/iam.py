"""IAM enforced in the emulated account: every AWS call a Lambda handler or the state machine makes is
authorised against its role's policy, the one main-terraform/iam.tf deploys (rendered by
totesys_local.terraform_values), before moto serves it.

Who calls is told by the credentials that signed the call, as in AWS: each function runs with the
session credentials of its own role (assumed through the emulated STS; every client created in the
handler's threads gets them), the state machine's engine signs with moto's fixed engine key, which stands
for the state machine's role. Anything else is the operator (the test or `totesys run` setting the account
up and reading results), which is not restricted.

The decision is moto's own policy evaluation (``moto.iam.access_control.IAMPolicy``) over the role's inline
policies as stored in the emulated IAM; what moto's request-level enforcement lacks is the resource of a
non-S3 call (it checks those against "*"), so each call is mapped here to its IAM action and resource ARN
(``requested``). A call this module cannot map is refused with a message saying so: no call goes
unchecked.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Set, Tuple, cast

from botocore.exceptions import ClientError
from moto.iam.access_control import IAMPolicy, PermissionResult

from totesys_local.errors import LocalError

# moto's Step Functions engine signs every call it makes with this key (asl/utils/boto_client.py).
ENGINE_ACCESS_KEY = "ak"
# What a call asks IAM for: (action, resource ARN).
Request = Tuple[str, str]


class EnforcementGap(LocalError):
    """A call whose IAM action or resource this module does not know: refused, never waved through."""


@dataclass
class Identity:
    """Who a set of credentials is: ``stage`` (ingest/transform/load/state machine) and its role."""
    stage: str
    role_name: str
    document: str  # the iam.tf policy document the role's inline policy is rendered from


@dataclass
class Enforcement:
    """The identities of one emulated account and the refusals so far (oldest first)."""
    account_id: str
    region: str
    identities: Dict[str, Identity] = field(default_factory=dict)  # access key id -> Identity
    denials: List[str] = field(default_factory=list)
    # function name -> the deployed function (aws_emulation)
    functions: Dict[str, Any] = field(default_factory=dict)
    revoked: Set[str] = field(default_factory=set)  # access keys of invocations that timed out

    def authorise(self, client: Any, operation: str, params: Mapping[str, Any]) -> None:
        """Raise ClientError(AccessDenied) when the caller's role may not make this call."""
        access_key = _access_key(client)
        identity = self.identities.get(access_key) if access_key is not None else None
        if identity is None:
            return
        if access_key in self.revoked:
            self._deny(identity, *_first(self, client, operation, params),
                       "after its invocation timed out (Lambda had ended it)", operation)
        for action, resource in requested(self, client, operation, params):
            if not self.permitted(identity, action, resource):
                self._deny(identity, action, resource, "", operation)

    def may(self, stage: str, action: str, resource: str) -> bool:
        """True when ``stage``'s role (ingest/transform/load/state machine) may ``action`` on ``resource``."""
        identity = next(identity for identity in self.identities.values() if identity.stage == stage)
        return self.permitted(identity, action, resource)

    def permitted(self, identity: Identity, action: str, resource: str) -> bool:
        """True when the role's inline policies allow ``action`` on ``resource`` and none denies it."""
        from moto.iam.models import iam_backends
        backend = iam_backends[self.account_id]["aws"]
        allowed = False
        for name in backend.list_role_policies(identity.role_name):
            _, document = backend.get_role_policy(identity.role_name, name)
            result = IAMPolicy(document).is_action_permitted(action, resource)
            if result == PermissionResult.DENIED:
                return False
            allowed = allowed or result == PermissionResult.PERMITTED
        return allowed

    def _deny(self, identity: Identity, action: str, resource: str, how: str, operation: str) -> NoReturn:
        line = (f"{identity.stage}: AccessDenied: role {identity.role_name} may not {action} on {resource}"
                f"{' ' + how if how else ''} (main-terraform/iam.tf, policy document "
                f"\"{identity.document}\")")
        self.denials.append(line)
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": line}}, operation)


def _access_key(client: Any) -> Optional[str]:
    credentials = getattr(client._request_signer, "_credentials", None)
    if credentials is None:
        return None
    return credentials.get_frozen_credentials().access_key


def _first(enforcement: Enforcement, client: Any, operation: str, params: Mapping[str, Any]) -> Request:
    requests = requested(enforcement, client, operation, params)
    return requests[0]


# -- what a call asks for ---------------------------------------------------------------------------

def _s3_object(params: Mapping[str, Any]) -> str:
    return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"


def _s3_bucket(params: Mapping[str, Any]) -> str:
    return f"arn:aws:s3:::{params['Bucket']}"


# service -> operation -> (IAM action, resource from the parameters)
S3: Dict[str, Callable[[Mapping[str, Any]], Request]] = {
    "GetObject": lambda p: ("s3:GetObjectVersion" if p.get("VersionId") else "s3:GetObject", _s3_object(p)),
    "HeadObject": lambda p: ("s3:GetObjectVersion" if p.get("VersionId") else "s3:GetObject", _s3_object(p)),
    "PutObject": lambda p: ("s3:PutObject", _s3_object(p)),
    "CreateMultipartUpload": lambda p: ("s3:PutObject", _s3_object(p)),
    "UploadPart": lambda p: ("s3:PutObject", _s3_object(p)),
    "CompleteMultipartUpload": lambda p: ("s3:PutObject", _s3_object(p)),
    "AbortMultipartUpload": lambda p: ("s3:AbortMultipartUpload", _s3_object(p)),
    "DeleteObject": lambda p: ("s3:DeleteObjectVersion" if p.get("VersionId") else "s3:DeleteObject",
                               _s3_object(p)),
    "ListObjectsV2": lambda p: ("s3:ListBucket", _s3_bucket(p)),
    "ListObjects": lambda p: ("s3:ListBucket", _s3_bucket(p)),
    "HeadBucket": lambda p: ("s3:ListBucket", _s3_bucket(p)),
    "ListObjectVersions": lambda p: ("s3:ListBucketVersions", _s3_bucket(p)),
}


def _secret_arn(enforcement: Enforcement, secret_id: str) -> str:
    """The ARN IAM evaluates GetSecretValue against: the secret's own (with its random suffix)."""
    if secret_id.startswith("arn:"):
        return secret_id
    from moto.secretsmanager.models import secretsmanager_backends
    secrets = secretsmanager_backends[enforcement.account_id][enforcement.region].secrets
    secret = secrets.get(secret_id)
    if secret is not None:
        return secret.arn
    return f"arn:aws:secretsmanager:{enforcement.region}:{enforcement.account_id}:secret:{secret_id}"


def _function_arn(enforcement: Enforcement, params: Mapping[str, Any]) -> str:
    name = params["FunctionName"]
    if not name.startswith("arn:"):
        name = f"arn:aws:lambda:{enforcement.region}:{enforcement.account_id}:function:{name}"
    return f"{name}:{params['Qualifier']}" if params.get("Qualifier") else name


def requested(enforcement: Enforcement, client: Any, operation: str,
              params: Mapping[str, Any]) -> List[Request]:
    """[(IAM action, resource ARN)] a call needs. Raises EnforcementGap for a call not mapped here."""
    service = client.meta.service_model.service_name
    if service == "s3" and operation in S3:
        return [S3[operation](params)]
    if service == "s3" and operation == "CopyObject":
        source = params["CopySource"]
        source = source if isinstance(source, str) else f"{source['Bucket']}/{source['Key']}"
        return [("s3:PutObject", _s3_object(params)), ("s3:GetObject", f"arn:aws:s3:::{source.lstrip('/')}")]
    if service == "secretsmanager" and operation == "GetSecretValue":
        return [("secretsmanager:GetSecretValue", _secret_arn(enforcement, params["SecretId"]))]
    if service == "lambda" and operation == "Invoke":
        return [("lambda:InvokeFunction", _function_arn(enforcement, params))]
    if service == "sns" and operation == "Publish":
        return [("sns:Publish", cast(str, params.get("TopicArn") or params.get("TargetArn")))]
    if service == "stepfunctions" and operation == "ListExecutions":
        return [("states:ListExecutions", params["stateMachineArn"])]
    raise EnforcementGap(f"local IAM enforcement does not know the action and resource of {service} "
                         f"{operation}: add it to totesys_local.iam.requested")
