"""Shared fixtures: one real PostgreSQL per test session, fresh databases per test, moto AWS.

Set TOTESYS_PG_URL=postgresql://user:pass@host:port/postgres to use your own server (the user must
be allowed to CREATE DATABASE); otherwise a throwaway cluster is started and removed at exit.
"""
import atexit
import os
import uuid

import boto3
import pytest
from moto import mock_aws

from totesys_local.cluster import create_database, drop_database, temporary_cluster, with_database

SCALE1_SEED = 42


@pytest.fixture(scope="session")
def pg_admin_url():
    """URL of a server where tests may create and drop databases."""
    user_url = os.environ.get("TOTESYS_PG_URL")
    if user_url:
        yield user_url
        return
    cluster = temporary_cluster()
    atexit.register(cluster.destroy)  # also when the session dies on an error
    yield cluster.url()
    cluster.destroy()


@pytest.fixture
def new_database(pg_admin_url):
    """Factory: ``new_database(template=None)`` -> URL of a new database dropped after the test."""
    created = []

    def make(template=None):
        name = f"t_{uuid.uuid4().hex[:12]}"
        create_database(pg_admin_url, name, template)
        created.append(name)
        return with_database(pg_admin_url, name)

    yield make
    for name in created:
        drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def totesys_template(pg_admin_url):
    """Name of a database seeded once at scale 1 (seed 42); copy it, never change it."""
    from totesys_local.generator import seed
    name = f"tpl_totesys_{uuid.uuid4().hex[:8]}"
    create_database(pg_admin_url, name)
    seed(with_database(pg_admin_url, name), scale=1, seed=SCALE1_SEED)
    yield name
    drop_database(pg_admin_url, name)


@pytest.fixture
def totesys_url(new_database, totesys_template):
    """A private copy of the scale-1 totesys database (fast: CREATE DATABASE ... TEMPLATE)."""
    return new_database(template=totesys_template)


@pytest.fixture
def warehouse_url(new_database):
    """An empty database for the warehouse."""
    return new_database()


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-2",
}


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials so boto3 can never reach a real account."""
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def aws(aws_env):
    """moto in-process for S3, Secrets Manager, SNS, SSM, Step Functions, Lambda and Logs."""
    with mock_aws():
        yield


@pytest.fixture
def buckets(aws, monkeypatch):
    """The ingest and processed buckets (versioned, like the real ones) and their env vars."""
    s3 = boto3.client("s3")
    names = {"ingest": "totesys-test-ingest", "processed": "totesys-test-processed"}
    for name in names.values():
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    monkeypatch.setenv("INGEST_BUCKET", names["ingest"])
    monkeypatch.setenv("PROCESSED_BUCKET", names["processed"])
    return names


def put_credentials_secret(secret_id, url):
    """Store a database URL as a credentials secret in (moto) Secrets Manager."""
    import json

    from utils.db.connection import credentials_from_url
    client = boto3.client("secretsmanager")
    client.create_secret(Name=secret_id, SecretString=json.dumps(credentials_from_url(url)))


@pytest.fixture
def pipeline_env(buckets, monkeypatch):
    """Factory wiring source and warehouse URLs into secrets + env vars, as Terraform does in AWS."""
    def wire(source_url=None, warehouse_url=None):
        if source_url:
            put_credentials_secret("test/totesys", source_url)
            monkeypatch.setenv("TOTESYS_SECRET_ID", "test/totesys")
        if warehouse_url:
            put_credentials_secret("test/warehouse", warehouse_url)
            monkeypatch.setenv("WAREHOUSE_SECRET_ID", "test/warehouse")
        return buckets
    return wire
