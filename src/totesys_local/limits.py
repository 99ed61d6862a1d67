"""AWS's other limits, checked locally for every invocation: the Step Functions state input/output size,
the Lambda synchronous response size, the function's memory_size and its ephemeral storage (/tmp).

``check`` turns what an invocation used into findings: an error when a limit is exceeded (AWS would fail
the invocation or the execution), a warning when the use is within WARN_FRACTION of it. The emulation
(totesys_local.aws_emulation) checks the payloads of every invocation, where they are exact; memory and
/tmp belong where each invocation runs in a process of its own, as in Lambda (`make bench-scale`; in the
emulation's process its own memory would be counted).
"""
from typing import Any, List, Mapping, Optional
from dataclasses import dataclass

# Step Functions: a state's input or output, as UTF-8 bytes (States.DataLimitExceeded beyond).
STATE_PAYLOAD_BYTES = 256 * 1024
# Lambda: the response of a synchronous invocation (Function.ResponseSizeTooLarge beyond).
LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024
WARN_FRACTION = 0.8

# What AWS reports when a limit is exceeded (the error the state machine sees).
ERROR_TYPES = {"state input": "States.DataLimitExceeded", "state output": "States.DataLimitExceeded",
               "response": "Function.ResponseSizeTooLarge", "memory": "Runtime.OutOfMemory",
               "ephemeral storage": "Runtime.ExitError"}


@dataclass
class Finding:
    level: str  # "error" or "warning"
    error_type: str  # the error AWS gives when the limit is exceeded
    message: str


def _measure(stage: str, what: str, used: Optional[float], limit: float, unit: str,
             scale: float) -> Optional[Finding]:
    if used is None:
        return None
    shown = f"{used / scale:,.1f} {unit} of {limit / scale:,.1f} {unit}"
    if used > limit:
        return Finding("error", ERROR_TYPES[what], f"{stage}: {what} {shown}: over AWS's limit")
    if used >= WARN_FRACTION * limit:
        return Finding("warning", ERROR_TYPES[what], f"{stage}: {what} {shown} ({used / limit:.0%}): "
                       f"within {1 - WARN_FRACTION:.0%} of AWS's limit")
    return None


def check(stage: str, limits: Mapping[str, Any], request_bytes: Optional[int] = None,
          response_bytes: Optional[int] = None, peak_mb: Optional[float] = None,
          tmp_mb: Optional[float] = None) -> List[Finding]:
    """Findings for one invocation of ``stage`` (``limits``: terraform_values.function_limits()[stage]).

    ``request_bytes`` is the invocation's event (the task's state input), ``response_bytes`` its result
    (the task's state output, and the Lambda response)."""
    kib, mib = 1024, 1024 * 1024
    findings = [
        _measure(stage, "state input", request_bytes, STATE_PAYLOAD_BYTES, "KiB", kib),
        _measure(stage, "response", response_bytes, LAMBDA_RESPONSE_BYTES, "MiB", mib),
        _measure(stage, "state output", response_bytes, STATE_PAYLOAD_BYTES, "KiB", kib),
        _measure(stage, "memory", peak_mb, limits["memory_mb"], "MB", 1),
        _measure(stage, "ephemeral storage", tmp_mb, limits["ephemeral_storage_mb"], "MB", 1),
    ]
    return [finding for finding in findings if finding is not None]
