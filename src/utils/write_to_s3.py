"""Write one object to S3, never overwriting an existing one."""
from botocore.exceptions import ClientError

from utils.errors import StateConflictError, StorageThrottledError


def write_to_s3(s3_client, bucket_name, file_key, data, overwrite=False):
    """Put ``data`` (bytes, str or a file-like object) at ``bucket_name/file_key``.

    Objects are immutable: unless ``overwrite`` is set, the write is conditional
    (If-None-Match: *) and an existing key raises StateConflictError.
    S3 throttling raises StorageThrottledError (retryable).
    """
    if hasattr(data, "getvalue"):
        body = data.getvalue()
    elif isinstance(data, str):
        body = data.encode()
    else:
        body = data
    kwargs = {} if overwrite else {"IfNoneMatch": "*"}
    try:
        s3_client.put_object(Bucket=bucket_name, Key=file_key, Body=body, **kwargs)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise StateConflictError(
                f"s3://{bucket_name}/{file_key} already exists; objects are never overwritten") from None
        if code in ("SlowDown", "Throttling", "RequestLimitExceeded", "503"):
            raise StorageThrottledError(f"S3 throttled the write of {file_key}") from None
        raise
