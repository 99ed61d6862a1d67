"""The local runner's state folder: the buckets moto forgets, saved crash-safely, and the last error.

``<state-dir>/s3/<bucket>/<key>`` holds every object of the two local buckets;
``<state-dir>/last_error.json`` the last failed run (stage, error_type, message, time, log), removed by
the next successful run. Reading them needs no emulated AWS: ``totesys pending`` does it directly.
"""
import datetime as dt
import json
import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Mapping, Union

import boto3

from utils.aws.objects import list_keys

REGION = "eu-west-2"
BUCKETS = {"INGEST_BUCKET": "totesys-local-ingest", "PROCESSED_BUCKET": "totesys-local-processed"}
LAST_ERROR_FILE = "last_error.json"


def write_atomically(path: Path, body: bytes) -> None:
    """Replace ``path`` with ``body`` all at once: a temporary file in the same folder, flushed and
    fsync'ed, then renamed over the target (and the folder fsync'ed), so a kill leaves the old file
    or the new one, never a part of it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(body)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException as err:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(err, OSError):
            raise _naming(err, path) from None
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` with the file it is about: a failed write or fsync (a full disk) names none itself."""
    return err if err.filename else OSError(err.errno, err.strerror, str(path))


def save_buckets(s3_dir: Path) -> int:
    """Save the buckets to ``s3_dir``; return the number of new data files.

    The state pointers (``_state/``) are read first and written last: every data object a pointer
    names was written to S3 before the pointer advanced, so it is listed, and saved, before the
    pointer is. A kill at any moment leaves pointers that name only saved objects. Data objects are
    immutable: one already saved is not written again."""
    s3 = boto3.client("s3", region_name=REGION)
    pointers, written = [], 0
    for bucket in BUCKETS.values():
        for key in list_keys(s3, bucket, "_state/"):
            pointers.append((bucket, key, s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    for bucket in BUCKETS.values():
        for key in list_keys(s3, bucket):
            target = s3_dir / bucket / key
            if key.startswith("_state/") or target.exists():
                continue
            write_atomically(target, s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            written += 1
    for bucket, key, body in pointers:
        write_atomically(s3_dir / bucket / key, body)
    return written


def record_failure(state_dir: Path, failure: Mapping[str, object], log_path: Union[str, Path]) -> None:
    """Write ``state_dir/last_error.json``: ``failure`` (stage, error_type, message) plus time and log."""
    record = dict(failure, time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  log=str(log_path))
    write_atomically(state_dir / LAST_ERROR_FILE, json.dumps(record, indent=2).encode())


def clear_failure(state_dir: Path) -> None:
    """Remove ``state_dir/last_error.json`` (a run succeeded)."""
    with suppress(FileNotFoundError):
        (state_dir / LAST_ERROR_FILE).unlink()
