"""Dashboard fixtures: a warehouse generated once per session by the real pipeline on scale-1 data."""
import uuid

import pytest
from moto import mock_aws

from totesys_local.aws_emulation import (UNSET_VARIABLES, account_environment, create_buckets,
                                         put_credentials_secret)
from totesys_local.cluster import create_database, drop_database, with_database
from utils.db.kept import close_kept_connections


def run_pipeline_into(source_url, warehouse_url, runs=2):
    """ingest -> transform -> load ``runs`` times (a simulated half hour of business between runs) in
    moto, as tests/test_pipeline_reconcile.py does; the warehouse ends with ``runs`` ledger batches."""
    import ingest
    import load
    import transform
    from totesys_local.generator import simulate
    environment = account_environment(INGEST_BUCKET="dash-ingest", PROCESSED_BUCKET="dash-processed",
                                      TOTESYS_SECRET_ID="dash/totesys", WAREHOUSE_SECRET_ID="dash/warehouse")
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for key, value in environment.items():
            patch.setenv(key, value)
        for key in (*UNSET_VARIABLES, "TOTESYS_LOG_FILE"):
            patch.delenv(key, raising=False)
        create_buckets(("dash-ingest", "dash-processed"))
        put_credentials_secret("dash/totesys", source_url)
        put_credentials_secret("dash/warehouse", warehouse_url)
        for run in range(runs):
            if run:
                simulate(source_url, minutes=30, seed=run)
            load.lambda_handler(transform.lambda_handler(ingest.lambda_handler({}, None), None), None)
    close_kept_connections()  # the load's kept connection would keep the warehouse from being a template


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
