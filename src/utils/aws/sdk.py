"""The AWS SDK the code was tested with: a start-up check every handler runs (``stage_handler``).

On Lambda, boto3/botocore come from the runtime unless the own layer (``layers/requirements.txt``)
ships them; the state pointers' compare-and-swap (``utils.aws.state``) needs S3 ``put_object`` with
``IfMatch``, which an older botocore does not know. Without this check such a runtime fails late, after
the data was written, with botocore's ParamValidationError; with it, every invocation fails at once
with a message that says what to deploy.
"""
from typing import Optional
import functools

import botocore
import botocore.session

from utils.errors import ConfigError

# The botocore the code was tested with: layers/requirements.txt's pin (a test keeps them equal).
TESTED_BOTOCORE_VERSION = "1.44.8"


@functools.lru_cache(maxsize=1)
def sdk_problem() -> Optional[str]:
    """What the installed botocore lacks (a sentence), or None. Computed once per process (the first
    invocation of a Lambda environment); ``sdk_problem.cache_clear()`` forgets the answer."""
    try:
        model = botocore.session.get_session().get_service_model("s3")
        members = model.operation_model("PutObject").input_shape.members
    except Exception as err:  # noqa: BLE001 - any failure to read the model is the answer
        return f"its S3 model cannot be read ({type(err).__name__})"
    if "IfMatch" not in members:
        return "its S3 put_object has no IfMatch parameter"
    return None


def require_tested_sdk() -> None:
    """Raise ConfigError when the installed botocore cannot do what the pipeline needs (S3
    ``put_object`` with ``IfMatch``); the message names the installed and the tested versions."""
    problem = sdk_problem()
    if problem:
        raise ConfigError(
            f"botocore {botocore.__version__} cannot run this pipeline: {problem}, which the state "
            "pointers' compare-and-swap needs (a late-2024 botocore or newer). The own Lambda layer ships "
            f"botocore {TESTED_BOTOCORE_VERSION}, the version tested: run `make layer` and deploy it "
            "after the managed pandas layer")
