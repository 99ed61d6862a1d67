"""The saved buckets served from disk on demand, so a local run's start-up does not grow with history.

Before, every object saved under ``<state-dir>/s3`` was put back into moto before each execution: at
scale 10 after a few runs that was most of the ~3 s ``totesys run`` spent around the execution, and it
grew with every batch. Now only the buckets and the state pointers (``_state/``, whose ETags the stages'
compare-and-swap needs) are put back; any other object is read from its saved file the first time the
emulated S3 is asked for it (GetObject, HeadObject, and the existence check of a conditional put) and kept
in moto from then on. The pipeline never lists a bucket (it follows the state pointers and the manifests'
links), so what it reads is exactly what it would have read before.
"""
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional
from unittest import mock

import boto3
from moto.s3.models import S3Backend

from totesys_local.local_state import BUCKETS, REGION

STATE_PREFIX = "_state/"


def _saved_file(s3_dir: Path, bucket_name: str, key_name: str) -> Optional[Path]:
    """The saved file of an object of a local bucket, or None (another bucket, a temporary file, a key
    that would leave the bucket's folder, or nothing saved)."""
    if bucket_name not in BUCKETS.values() or key_name.endswith(".tmp"):
        return None
    root = (s3_dir / bucket_name).resolve()
    path = (root / key_name).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


@contextmanager
def lazy_buckets(s3_dir: Path) -> Iterator[None]:
    """Inside an emulated-AWS context: create the local buckets, put back the saved state pointers, and
    serve every other saved object from ``s3_dir`` when it is first asked for."""
    real_get, real_head = S3Backend.get_object, S3Backend.head_object

    def fault_in(backend: S3Backend, bucket_name: str, key_name: str) -> None:
        if key_name in backend.get_bucket(bucket_name).keys:
            return
        path = _saved_file(s3_dir, bucket_name, key_name)
        if path is not None:
            backend.put_object(bucket_name, key_name, path.read_bytes())

    def get_object(self: S3Backend, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        fault_in(self, bucket_name, key_name)
        return real_get(self, bucket_name, key_name, *args, **kwargs)

    def head_object(self: S3Backend, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        fault_in(self, bucket_name, key_name)
        return real_head(self, bucket_name, key_name, *args, **kwargs)

    s3 = boto3.client("s3", region_name=REGION)
    for bucket in BUCKETS.values():
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        pointers = s3_dir / bucket / STATE_PREFIX
        if pointers.is_dir():
            for path in sorted(pointers.iterdir()):
                if path.is_file() and not path.name.endswith(".tmp"):
                    s3.put_object(Bucket=bucket, Key=STATE_PREFIX + path.name, Body=path.read_bytes())
    with mock.patch.object(S3Backend, "get_object", get_object), \
            mock.patch.object(S3Backend, "head_object", head_object):
        yield
