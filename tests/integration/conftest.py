"""Fixtures of the trust-and-repair tests: the small known source, loaded once through the three stages."""
import boto3
import pytest

from tests.support.pipeline import run_pipeline
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.verify.run import verify


@pytest.fixture
def loaded(pipeline_env, source_url, warehouse_url):
    """The small source loaded into an empty warehouse once; returns (source url, warehouse url, buckets)."""
    names = pipeline_env(source_url=source_url, warehouse_url=warehouse_url)
    run_pipeline()
    return source_url, warehouse_url, names


@pytest.fixture
def check():
    """``check(source_url, warehouse_url, bucket, second=False)`` -> the verify Report (real connections,
    moto S3; ``second``: the history and rollup checks on a second warehouse connection)."""
    def run(source_url, warehouse_url, bucket, overlap=3600, second=False):
        source = connect_to_db(credentials=credentials_from_url(source_url), timezone=None)
        warehouse = connect_to_db(credentials=credentials_from_url(warehouse_url))
        connect = (lambda: connect_to_db(credentials=credentials_from_url(warehouse_url))) if second else None
        try:
            return verify(source, warehouse, boto3.client("s3"), bucket, overlap, connect_warehouse=connect)
        finally:
            close_db_connection(source)
            close_db_connection(warehouse)
    return run
