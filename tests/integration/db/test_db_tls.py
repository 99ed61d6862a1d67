"""Verified TLS to the databases (utils.db.tls, utils.db.connection) against a real PostgreSQL that
speaks TLS with a certificate from its own CA, made here with openssl.

The TLS cluster accepts plaintext only on its ``postgres`` database; every other database takes TLS
connections only (``hostssl``), so a stage that connects there at all proved it used TLS. The settings'
own rules (variables, modes, CA bundles) are in tests/unit/db/test_tls.py.
"""
import os
import shutil
import subprocess  # nosec B404 - runs openssl with fixed arguments
import tempfile
import traceback
from pathlib import Path

import pytest

import ingest
import load
from totesys_local import cluster as clusters
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.errors import CredentialsError, TlsError

TLS_DATABASE = "tls_only"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)  # nosec B603 B607


def _make_ca(folder, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=folder)
    return folder / f"{name}.pem"


def _make_server_cert(folder, ca):
    """A server certificate for 127.0.0.1 (an IP SAN only: the name ``localhost`` does not match)."""
    (folder / "server.ext").write_text(
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr", cwd=folder)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "server.ext", cwd=folder)
    return folder / "server.pem", folder / "server.key"


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A throwaway cluster with ssl = on; yields (cluster, the CA's PEM path, another CA's PEM path)."""
    certs = tmp_path_factory.mktemp("certs")
    ca = _make_ca(certs, "test-ca")
    other_ca = _make_ca(certs, "other-ca")
    server_cert, server_key = _make_server_cert(certs, "test-ca")
    base = Path(tempfile.mkdtemp(prefix="totesys-pg-"))
    os.chmod(base, 0o755)  # nosec B103 - the server user must enter it; the data folder is 0700
    cluster = clusters.Cluster.create(base / "data")
    try:
        data = Path(cluster.info.datadir)
        for source, target in ((server_cert, "server.crt"), (server_key, "server.key")):
            shutil.copy(source, data / target)
            os.chmod(data / target, 0o600)
            if os.geteuid() == 0:
                shutil.chown(data / target, clusters.SERVER_USER, clusters.SERVER_USER)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostnossl postgres all 127.0.0.1/32 scram-sha-256\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n")
        cluster.start()
        clusters.create_database(cluster.url(), TLS_DATABASE)
        yield cluster, ca, other_ca
    finally:
        cluster.destroy()


@pytest.fixture
def tls_env(monkeypatch):
    """Set the TLS variables of one database role: ``tls_env("totesys", "verify-full", path)``."""
    for role in ("TOTESYS", "WAREHOUSE"):
        monkeypatch.delenv(f"{role}_SSLMODE", raising=False)
        monkeypatch.delenv(f"{role}_SSLROOTCERT", raising=False)

    def set_tls(role, mode=None, root_cert=None):
        if mode is not None:
            monkeypatch.setenv(f"{role.upper()}_SSLMODE", mode)
        if root_cert is not None:
            monkeypatch.setenv(f"{role.upper()}_SSLROOTCERT", str(root_cert))
    return set_tls


def _ssl_in_use(conn):
    return conn.run("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0]


def _connect(cluster, database="postgres", host=None, role="totesys"):
    credentials = cluster.info.credentials(database)
    if host:
        credentials["host"] = host
    return connect_to_db(credentials, role=role)


def _assert_no_password(err, cluster):
    text = "".join(traceback.format_exception(err))
    assert cluster.info.password not in text and cluster.info.password not in str(err)


# -- against the TLS cluster ----------------------------------------------------------------------------

def test_verify_full_with_the_servers_ca_connects_encrypted(tls_cluster, tls_env):
    cluster, ca, _ = tls_cluster
    tls_env("totesys", "verify-full", ca)
    conn = _connect(cluster, TLS_DATABASE)
    try:
        ssl, version = _ssl_in_use(conn)
        assert ssl is True and version.startswith("TLSv1.")
    finally:
        close_db_connection(conn)


def test_verify_full_with_another_ca_fails_clearly(tls_cluster, tls_env):
    cluster, _, other_ca = tls_cluster
    tls_env("totesys", "verify-full", other_ca)
    with pytest.raises(TlsError) as raised:
        _connect(cluster)
    port = cluster.info.port
    assert str(raised.value) == (
        f"cannot connect to database at 127.0.0.1:{port}/postgres (totesys) with sslmode verify-full: "
        "the server's certificate was not accepted: unable to get local issuer certificate")
    _assert_no_password(raised.value, cluster)


def test_verify_full_with_the_system_store_rejects_a_private_ca(tls_cluster, tls_env):
    cluster, _, _ = tls_cluster
    tls_env("totesys", "verify-full")  # no bundle: the system trust store, which lacks our CA
    with pytest.raises(TlsError, match="not accepted: unable to get local issuer certificate"):
        _connect(cluster)


def test_verify_full_with_a_host_name_the_certificate_does_not_name_fails_clearly(tls_cluster, tls_env):
    cluster, ca, _ = tls_cluster
    tls_env("warehouse", "verify-full", ca)
    with pytest.raises(TlsError) as raised:
        _connect(cluster, host="localhost", role="warehouse")  # the certificate names 127.0.0.1 only
    assert str(raised.value) == (
        f"cannot connect to database at localhost:{cluster.info.port}/postgres (warehouse) with sslmode "
        "verify-full: the server's certificate was not accepted: Hostname mismatch, certificate is not "
        "valid for 'localhost'.")
    _assert_no_password(raised.value, cluster)


def test_require_encrypts_without_verifying(tls_cluster, tls_env):
    cluster, _, other_ca = tls_cluster
    tls_env("warehouse", "require", other_ca)  # a bundle is not used by require
    conn = _connect(cluster, TLS_DATABASE, host="localhost", role="warehouse")
    try:
        assert _ssl_in_use(conn)[0] is True
    finally:
        close_db_connection(conn)


@pytest.mark.parametrize("mode", [None, "disable"])
def test_disable_and_unset_on_loopback_connect_in_plaintext(tls_cluster, tls_env, mode):
    cluster, _, _ = tls_cluster
    tls_env("totesys", mode)
    conn = _connect(cluster)
    try:
        assert _ssl_in_use(conn)[0] is False
    finally:
        close_db_connection(conn)
    with pytest.raises(CredentialsError, match="no encryption"):  # this database takes TLS connections only
        _connect(cluster, TLS_DATABASE)


def test_a_tls_mode_against_a_server_without_tls_fails_clearly(pg_admin_url, tls_env):
    """The test session's own cluster runs without TLS (as the embedded local one does)."""
    tls_env("totesys", "require")
    credentials = credentials_from_url(pg_admin_url)
    with pytest.raises(TlsError, match=r"^cannot connect to database at 127\.0\.0\.1:\d+/postgres "
                                       r"\(totesys\) with sslmode require: the server does not accept TLS "
                                       r"connections$"):
        connect_to_db(credentials, role="totesys")


# -- the stages read their own database's variables ----------------------------------------------------

def test_the_load_stage_connects_to_the_warehouse_over_verified_tls(tls_cluster, tls_env, pipeline_env):
    cluster, ca, other_ca = tls_cluster
    pipeline_env(warehouse_url=cluster.url(TLS_DATABASE))
    tls_env("totesys", "verify-full", other_ca)  # the source's settings must not apply to the warehouse
    tls_env("warehouse", "verify-full", other_ca)
    with pytest.raises(TlsError, match=r"\(warehouse\) with sslmode verify-full: the server's certificate"):
        load.lambda_handler({}, None)
    tls_env("warehouse", "verify-full", ca)
    # The TLS-only database accepted the connection: the schema was created and nothing was pending.
    assert load.lambda_handler({}, None)["batches"] == []


def test_the_ingest_stage_reads_the_source_variables(tls_cluster, tls_env, pipeline_env, caplog):
    cluster, _, other_ca = tls_cluster
    pipeline_env(source_url=cluster.url(TLS_DATABASE))
    tls_env("warehouse", "verify-full", other_ca)
    tls_env("totesys", "verify-full", other_ca)
    with pytest.raises(TlsError, match=r"\(totesys\) with sslmode verify-full: the server's certificate was "
                                       r"not accepted: unable to get local issuer certificate"):
        ingest.lambda_handler({}, None)
    levels = [r.levelname for r in caplog.records if getattr(r, "error_type", None) == "TlsError"]
    assert levels == ["CRITICAL"]
