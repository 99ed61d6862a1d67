"""get_latest_filename (paginated listing) and get_last_ingest_time (from the state pointer)."""
from datetime import datetime

import boto3
import pytest

from utils.compat import get_last_ingest_time, get_latest_filename
from utils.aws.state import write_state


def test_latest_filename_sees_past_the_first_thousand_objects(buckets):
    s3 = boto3.client("s3")
    bucket = buckets["ingest"]
    # 1,100 keys; the greatest sorts after the first page of 1,000.
    for minute in range(1100):
        key = f"sales_order/2024/11/{1 + minute // 1000:02d}/{minute % 1000:06d}000000.parquet"
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3.put_object(Bucket=bucket, Key="sales_order_extra/2099/01/01/000000000000.parquet", Body=b"x")
    assert len(s3.list_objects_v2(Bucket=bucket, Prefix="sales_order/")["Contents"]) == 1000
    assert get_latest_filename(s3, bucket, "sales_order") == "sales_order/2024/11/02/000099000000.parquet"


def test_latest_filename_is_none_for_an_empty_prefix(buckets):
    assert get_latest_filename(boto3.client("s3"), buckets["ingest"], "payment") is None


def test_latest_filename_needs_a_table_name(buckets):
    with pytest.raises(ValueError, match="bad table name"):
        get_latest_filename(boto3.client("s3"), buckets["ingest"], "")


def test_last_ingest_time_comes_from_the_state_pointer_not_from_orphan_files(buckets):
    s3 = boto3.client("s3")
    bucket = buckets["ingest"]
    assert get_last_ingest_time(bucket, "staff") is None
    write_state(s3, bucket, "ingest", {"manifest_key": None, "batch_id": None, "tables": {
        "staff": {"high": "2024-11-26 10:15:00.123456", "snapshot": "5:5:"}}}, None)
    # A file of a run that failed before advancing the state does not count.
    s3.put_object(Bucket=bucket, Key="staff/2024/11/27/000000000000.parquet", Body=b"x")
    assert get_last_ingest_time(bucket, "staff") == datetime(2024, 11, 26, 10, 15, 0, 123456)
    assert get_last_ingest_time(table_name="staff", s3_client=s3) == datetime(2024, 11, 26, 10, 15, 0, 123456)
    assert get_last_ingest_time(bucket, "payment") is None
