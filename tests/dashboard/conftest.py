"""Dashboard fixtures: a warehouse generated once per session by the real pipeline on scale-1 data."""
import json
import uuid

import boto3
import pytest
from moto import mock_aws

from totesys_local.cluster import create_database, drop_database, with_database
from utils.db.connection import credentials_from_url

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
       "AWS_DEFAULT_REGION": "eu-west-2"}


def run_pipeline_into(source_url, warehouse_url, runs=2):
    """ingest -> transform -> load ``runs`` times (a simulated half hour of business between runs) in
    moto, as tests/test_pipeline_reconcile.py does; the warehouse ends with ``runs`` ledger batches."""
    import ingest
    import load
    import transform
    from totesys_local.generator import simulate
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for key, value in AWS.items():
            patch.setenv(key, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        patch.delenv("TOTESYS_LOG_FILE", raising=False)
        s3, secrets = boto3.client("s3"), boto3.client("secretsmanager")
        for variable, bucket in (("INGEST_BUCKET", "dash-ingest"), ("PROCESSED_BUCKET", "dash-processed")):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
            patch.setenv(variable, bucket)
        for variable, url in (("TOTESYS_SECRET_ID", source_url), ("WAREHOUSE_SECRET_ID", warehouse_url)):
            secrets.create_secret(Name=f"dash/{variable}", SecretString=json.dumps(credentials_from_url(url)))
            patch.setenv(variable, f"dash/{variable}")
        for run in range(runs):
            if run:
                simulate(source_url, minutes=30, seed=run)
            load.lambda_handler(transform.lambda_handler(ingest.lambda_handler({}, None), None), None)


@pytest.fixture(scope="session")
def warehouse_template(pg_admin_url, totesys_template):
    """Name of a warehouse database loaded by the real pipeline from a scale-1 totesys; copy it (with
    ``new_database(template=...)``), never change it."""
    source, name = f"dash_src_{uuid.uuid4().hex[:8]}", f"dash_wh_{uuid.uuid4().hex[:8]}"
    create_database(pg_admin_url, source, totesys_template)
    create_database(pg_admin_url, name)
    run_pipeline_into(with_database(pg_admin_url, source), with_database(pg_admin_url, name))
    drop_database(pg_admin_url, source)
    yield name
    drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def generated_warehouse(pg_admin_url, warehouse_template):
    """URL of a copy of the loaded warehouse shared by the session's read-only tests (never written to;
    a copy, so that the template has no open connection when a test copies it)."""
    name = f"dash_ro_{uuid.uuid4().hex[:8]}"
    create_database(pg_admin_url, name, warehouse_template)
    yield with_database(pg_admin_url, name)
    drop_database(pg_admin_url, name)
