"""Shared fixtures: one real PostgreSQL per test session, fresh databases per test, moto AWS.

Set TOTESYS_PG_URL=postgresql://user:pass@host:port/postgres to use your own server (the user must
be allowed to CREATE DATABASE); otherwise a throwaway cluster is started and removed at exit.
"""
import atexit
import logging
import os
import signal
import uuid

import boto3
import pytest
from moto import mock_aws

from tests.support.clusters import make_session_folder, remove_session_folder, stop_emulators_under
from tests.support.db import run_sql
from tests.support.ingest_mode import cdc_session, drop_idle_slot, new_slot_name
from tests.support.totesys import FILL_SQL, SCHEMA_SQL
from totesys_local.aws_emulation import (UNSET_VARIABLES, account_environment, create_buckets,
                                         put_credentials_secret)
from totesys_local.cluster import create_database, drop_database, temporary_cluster, with_database
from utils.db.kept import close_kept_connections

SCALE1_SEED = 42

# `totesys run` in-process, as before the local emulator: no test leaves an emulator behind, and child
# processes inherit this. The emulator's own tests (tests/totesys_local/test_daemon.py) switch it on.
os.environ["TOTESYS_DAEMON"] = "off"

# Every cluster the suite starts, here or in a child process, lives in one folder removed at the end,
# also when the run is interrupted (tests/support/clusters.py).
CLUSTERS = make_session_folder()
os.environ["TOTESYS_PGDATA_PARENT"] = str(CLUSTERS)
atexit.register(remove_session_folder, CLUSTERS)


def _interrupted(number, frame):
    """SIGTERM (a CI job cancelled, `kill`) ends the session as Ctrl-C does: fixtures torn down, the
    cluster folder removed."""
    raise KeyboardInterrupt(f"signal {number}")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)


def pytest_collection_modifyitems(config, items):
    """INGEST_MODE=cdc sessions (make test-cdc) skip the tests marked ``cursor_only``, naming why."""
    if not cdc_session():
        return
    for item in items:
        marker = item.get_closest_marker("cursor_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
            item.add_marker(pytest.mark.skip(reason=f"cursor mode only: {reason}"))


@pytest.fixture(autouse=True)
def session_ingest_mode(request, monkeypatch):
    """INGEST_MODE=cdc sessions (tests/support/ingest_mode.py): every pipeline of the test ingests through
    CDC from a slot of the test's own, dropped at its end; yields the slot name (None in cursor sessions)."""
    if not cdc_session():
        yield None
        return
    name = new_slot_name()
    monkeypatch.setenv("INGEST_MODE", "cdc")
    monkeypatch.setenv("CDC_SLOT_NAME", name)
    yield name
    if "pg_admin_url" in request.fixturenames:
        drop_idle_slot(request.getfixturevalue("pg_admin_url"), name)


@pytest.fixture(autouse=True)
def no_kept_connection():
    """Each test starts without a warehouse connection kept by an earlier test's load (utils.db.kept):
    closed at the end of every test, so no test reuses another's session or holds a database open."""
    yield
    close_kept_connections()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """After every fixture's teardown: stop the emulators of the tests' state folders and remove the
    clusters' folder, whether the session passed, failed or was interrupted."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    if basetemp is not None:
        stop_emulators_under(basetemp)
    remove_session_folder(CLUSTERS)


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


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials so boto3 can never reach a real account (the emulated account's environment)."""
    for key, value in account_environment().items():
        monkeypatch.setenv(key, value)
    for key in UNSET_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    # The state machine's Retry waits (up to 225 s for a lost database) cost no real time in tests.
    monkeypatch.setenv("TOTESYS_RETRY_TIME_SCALE", "0")


@pytest.fixture
def aws(aws_env):
    """moto in-process for S3, Secrets Manager, SNS, SSM, Step Functions, Lambda and Logs."""
    with mock_aws():
        yield


@pytest.fixture
def buckets(aws, monkeypatch):
    """The ingest and processed buckets (versioned, like the real ones) and their env vars."""
    names = {"ingest": "totesys-test-ingest", "processed": "totesys-test-processed"}
    create_buckets(names.values())
    monkeypatch.setenv("INGEST_BUCKET", names["ingest"])
    monkeypatch.setenv("PROCESSED_BUCKET", names["processed"])
    return names


@pytest.fixture
def s3(buckets):
    """A boto3 S3 client of the emulated account that holds ``buckets``."""
    return boto3.client("s3")


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


# -- ingest: a small source with known rows, and what the ingest logs -------------------------------

def _small_totesys(new_database):
    url = new_database()
    run_sql(url, SCHEMA_SQL)
    run_sql(url, FILL_SQL)
    return url


@pytest.fixture
def source_url(new_database):
    """A small totesys with known rows in every table (tests.support.totesys)."""
    return _small_totesys(new_database)


@pytest.fixture
def other_source(new_database):
    """A second small totesys with the same rows: another database on the same server (a re-point)."""
    return _small_totesys(new_database)


@pytest.fixture
def env(pipeline_env, source_url):
    """moto buckets + the source credentials secret; returns (s3 client, ingest bucket, source url)."""
    names = pipeline_env(source_url=source_url)
    return boto3.client("s3"), names["ingest"], source_url


@pytest.fixture
def ingest_log():
    """Every line the ingest logger writes, as (level, formatted JSON line)."""
    from utils.ingest.run import logger
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append((record.levelname, self.format(record)))

    handler = Collect()
    handler.setFormatter(logger.registered_formatter)
    target = logging.getLogger(logger.service)
    target.addHandler(handler)
    yield lines
    target.removeHandler(handler)
