"""Saved buckets served from disk on demand (totesys_local/lazy_s3.py): start-up independent of history."""
import contextlib

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from totesys_local import lazy_s3
from totesys_local.cli import main
from totesys_local.lazy_s3 import lazy_buckets
from totesys_local.local_state import BUCKETS, REGION

INGEST = BUCKETS["INGEST_BUCKET"]


def keys(s3, bucket):
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture
def saved(tmp_path, aws_env):
    """A state folder with a pointer, a data object, a leftover temporary file and an outside file."""
    s3_dir = tmp_path / "s3"
    (s3_dir / INGEST / "_state").mkdir(parents=True)
    (s3_dir / INGEST / "_state" / "ingest.json").write_bytes(b'{"manifest_key": "_batches/a.json"}')
    (s3_dir / INGEST / "_batches").mkdir()
    (s3_dir / INGEST / "_batches" / "a.json").write_bytes(b'{"batch_id": "a"}')
    (s3_dir / INGEST / "_batches" / ".b.json.x.tmp").write_bytes(b"half")
    (tmp_path / "outside.json").write_bytes(b"secret")
    return s3_dir


def test_only_the_state_pointers_are_put_back_and_the_rest_is_read_on_demand(saved):
    with mock_aws(), lazy_buckets(saved):
        s3 = boto3.client("s3", region_name=REGION)
        assert keys(s3, INGEST) == ["_state/ingest.json"]
        assert keys(s3, BUCKETS["PROCESSED_BUCKET"]) == []
        assert s3.head_object(Bucket=INGEST, Key="_batches/a.json")["ContentLength"] == 17
        assert s3.get_object(Bucket=INGEST, Key="_batches/a.json")["Body"].read() == b'{"batch_id": "a"}'
        assert keys(s3, INGEST) == ["_batches/a.json", "_state/ingest.json"]


@pytest.mark.parametrize("key", ["_batches/.b.json.x.tmp", "../outside.json", "_batches/missing.json"])
def test_temporary_outside_or_missing_files_are_not_served(saved, key):
    with mock_aws(), lazy_buckets(saved):
        with pytest.raises(ClientError, match="NoSuchKey"):
            boto3.client("s3", region_name=REGION).get_object(Bucket=INGEST, Key=key)


def test_a_saved_object_is_never_overwritten_by_a_conditional_put(saved):
    with mock_aws(), lazy_buckets(saved):
        s3 = boto3.client("s3", region_name=REGION)
        with pytest.raises(ClientError, match="PreconditionFailed"):
            s3.put_object(Bucket=INGEST, Key="_batches/a.json", Body=b"other", IfNoneMatch="*")


def test_a_later_run_starts_with_the_state_pointers_only(tmp_path, capsys, monkeypatch, totesys_url,
                                                         warehouse_url):
    state = tmp_path / "state"
    args = ["run", "--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    assert main(args) == 0
    started_with = []
    real = lazy_s3.lazy_buckets

    def spy(s3_dir):
        with real(s3_dir):
            s3 = boto3.client("s3", region_name=REGION)
            started_with.extend(keys(s3, bucket) for bucket in BUCKETS.values())
            yield
    monkeypatch.setattr(lazy_s3, "lazy_buckets", contextlib.contextmanager(spy))
    assert main(args) == 0
    assert "nothing new" in capsys.readouterr().out
    assert started_with == [["_state/ingest.json"], ["_state/transform.json"]]
