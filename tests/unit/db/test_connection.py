"""utils.db.connection without a server: credentials from URLs, the libpq password rules, incomplete
credentials refused (the connections themselves: tests/integration/test_shared_utils.py and
tests/integration/db/)."""
import pytest

from utils.compat import connect_to_db
from utils.db.connection import credentials_from_url, password_for
from utils.errors import CredentialsError
from tests.support.db import pgpass_file


def test_credentials_from_url_round_trip():
    creds = credentials_from_url("postgresql://ann:p%40ss@db.example:6543/tote")
    assert creds == {"host": "db.example", "port": 6543, "database": "tote", "user": "ann",
                     "password": "p@ss"}
    with pytest.raises(CredentialsError, match="postgresql://"):
        credentials_from_url("mysql://x")


def test_connect_rejects_incomplete_credentials():
    with pytest.raises(CredentialsError, match="host"):
        connect_to_db(credentials={"port": 1, "database": "d", "user": "u", "password": "p"})


def test_password_file_follows_libpq_rules(tmp_path):
    creds = {"host": "db.example", "port": 5433, "database": "tote", "user": "ann"}
    lines = ("# comment\n"
             "other:5433:tote:ann:not-this-host\n"
             "db.example:5433:tote:bob:not-this-user\n"
             r"db.example:*:tote:ann:c\:olon\\back" "\n"
             "*:*:*:*:too-late\n")
    assert password_for(creds, pgpass_file(tmp_path, lines)) == "c:olon\\back"
    assert password_for(dict(creds, user="zed"), pgpass_file(tmp_path, lines)) == "too-late"
    # an escaped \* is a literal star, not a wildcard
    assert password_for(creds, pgpass_file(tmp_path, r"\*:*:*:*:star" "\n")) == ""
    # group/world access: ignored, as libpq does
    assert password_for(creds, pgpass_file(tmp_path, "*:*:*:*:open\n", mode=0o644)) == ""
    assert password_for(creds, {"PGPASSFILE": str(tmp_path / "absent")}) == ""
    # PGPASSWORD comes first
    assert password_for(creds, dict(pgpass_file(tmp_path, lines), PGPASSWORD="env")) == "env"


def test_url_without_password_takes_it_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert credentials_from_url("postgresql://ann@db/tote")["password"] == "from-env"
    assert credentials_from_url("postgresql://ann:given@db/tote")["password"] == "given"
    assert credentials_from_url("postgresql://ann:@db/tote")["password"] == "from-env"  # empty = none
    with pytest.raises(CredentialsError, match="must look like .*got 'postgresql://ann@db:x/t'") as err:
        credentials_from_url("postgresql://ann:hunter2@db:x/t")
    assert "hunter2" not in str(err.value)
