"""Pipeline state pointers in S3, advanced by compare-and-swap.

A state pointer (``_state/<stage>.json``) is the only object the pipeline ever overwrites.
It is read together with its ETag and written back with If-Match on that ETag, so two runs
that started from the same state cannot both advance it: the second gets StateConflictError.
"""
import json
from typing import Any, Dict, Literal, Mapping, Optional, Tuple, overload

from botocore.exceptions import ClientError

from utils.contracts import IngestState, TransformState
from utils.errors import CorruptFileError, StateConflictError


def state_key(stage: str) -> str:
    """The key of a stage's state pointer."""
    return f"_state/{stage}.json"


@overload
def read_state(s3_client: Any, bucket_name: str,
               stage: Literal["ingest"]) -> Tuple[IngestState, Optional[str]]: ...


@overload
def read_state(s3_client: Any, bucket_name: str,
               stage: Literal["transform"]) -> Tuple[TransformState, Optional[str]]: ...


@overload
def read_state(s3_client: Any, bucket_name: str, stage: str) -> Tuple[Dict[str, Any], Optional[str]]: ...


def read_state(s3_client: Any, bucket_name: str, stage: str) -> Tuple[Any, Optional[str]]:
    """Return (state, etag) for ``stage``; ({}, None) when there is none yet. The state of "ingest" is
    an IngestState, that of "transform" a TransformState (utils.contracts)."""
    key = state_key(stage)
    try:
        response = s3_client.get_object(Bucket=bucket_name, Key=key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return {}, None
        raise
    try:
        state = json.loads(response["Body"].read())
    except ValueError:
        raise CorruptFileError(f"s3://{bucket_name}/{key} is not valid JSON", key=key) from None
    if not isinstance(state, dict):
        raise CorruptFileError(f"s3://{bucket_name}/{key} is not a JSON object", key=key)
    return state, str(response["ETag"])


def write_state(s3_client: Any, bucket_name: str, stage: str, state: Mapping[str, Any],
                expected_etag: Optional[str]) -> Optional[str]:
    """Replace the state of ``stage`` if it still has ``expected_etag`` (None: must not exist yet).

    Returns the new ETag (so a run can advance the same pointer again with CAS).
    Raises StateConflictError when another run advanced it first.
    """
    key = state_key(stage)
    condition = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
    try:
        response = s3_client.put_object(
            Bucket=bucket_name, Key=key, Body=json.dumps(state, sort_keys=True).encode(),
            ContentType="application/json", **condition)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
            raise StateConflictError(
                f"state {key} changed during this run; another run advanced it", key=key) from None
        raise
    etag = response.get("ETag")
    return None if etag is None else str(etag)


def read_ingest_state(s3_client: Any, bucket_name: str) -> Tuple[IngestState, Optional[str]]:
    """(``_state/ingest.json``, its ETag); ({}, None) before the first run."""
    return read_state(s3_client, bucket_name, "ingest")


def write_ingest_state(s3_client: Any, bucket_name: str, state: IngestState,
                       expected_etag: Optional[str]) -> Optional[str]:
    """Advance ``_state/ingest.json`` (``write_state``: compare-and-swap on ``expected_etag``)."""
    return write_state(s3_client, bucket_name, "ingest", state, expected_etag)


def read_transform_state(s3_client: Any, bucket_name: str) -> Tuple[TransformState, Optional[str]]:
    """(``_state/transform.json``, its ETag); ({}, None) before the first run."""
    return read_state(s3_client, bucket_name, "transform")


def write_transform_state(s3_client: Any, bucket_name: str, state: TransformState,
                          expected_etag: Optional[str]) -> Optional[str]:
    """Advance ``_state/transform.json`` (``write_state``: compare-and-swap on ``expected_etag``)."""
    return write_state(s3_client, bucket_name, "transform", state, expected_etag)
