"""The TLS settings of the databases (utils.db.tls): the variables of each role, the modes, the CA bundle;
the connections themselves, against a TLS cluster, are in tests/integration/db/test_db_tls.py."""
import pytest

from utils.db.tls import TlsSettings, is_loopback, ssl_context, tls_settings
from utils.errors import ConfigError


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", "disable"), ("127.0.0.53", "disable"), ("::1", "disable"), ("localhost", "disable"),
    ("LOCALHOST", "disable"), ("db.example.com", "verify-full"), ("10.0.0.5", "verify-full"),
    ("totesys.abc.eu-west-2.rds.amazonaws.com", "verify-full")])
def test_unset_mode_is_verify_full_with_the_system_store_except_on_loopback(host, expected):
    assert tls_settings("totesys", host, environ={}) == TlsSettings(mode=expected, root_cert=None)
    assert is_loopback(host) == (expected == "disable")


def test_each_database_reads_its_own_variables():
    environ = {"TOTESYS_SSLMODE": "require", "WAREHOUSE_SSLMODE": "Verify-Full ",
               "WAREHOUSE_SSLROOTCERT": "/opt/certs/rds-global-bundle.pem"}
    assert tls_settings("totesys", "db.example.com", environ) == TlsSettings("require", None)
    assert tls_settings("warehouse", "127.0.0.1", environ) == TlsSettings(
        "verify-full", "/opt/certs/rds-global-bundle.pem")
    # No role (local tools connecting by URL): no variable is read.
    assert tls_settings(None, "db.example.com", environ) == TlsSettings("verify-full", None)


@pytest.mark.parametrize("mode", ["verify-ca", "prefer", "true", "allow"])
def test_an_unknown_mode_is_refused_naming_the_variable(mode):
    with pytest.raises(ConfigError, match=rf"^environment variable WAREHOUSE_SSLMODE must be one of "
                                          rf"disable, require, verify-full, got '{mode}'$"):
        tls_settings("warehouse", "db.example.com", {"WAREHOUSE_SSLMODE": mode})


def test_a_missing_or_unreadable_ca_bundle_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match=r"^db: sslmode verify-full: the CA bundle /nowhere/ca\.pem "
                                          r"does not exist$"):
        ssl_context(TlsSettings("verify-full", "/nowhere/ca.pem"), "db")
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"cannot be read as PEM certificates"):
        ssl_context(TlsSettings("verify-full", str(not_pem)), "db")


def test_an_unknown_database_role_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown database role 'source'"):
        tls_settings("source", "db.example.com", {})
