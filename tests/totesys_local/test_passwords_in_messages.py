"""No message shows a password, whatever characters it holds (issue 19, item 7): a URL written with
its password unencoded (``/ # ? @ : %`` and non-ASCII letters) is read as libpq users mean it, and the
errors of `totesys run`, `pending`, `seed` and `simulate` name the database without it."""
import re
import uuid

import pytest
from pg8000.native import identifier, literal

from tests.support.db import run_sql
from totesys_local.cli import main
from totesys_local.cluster import free_port
from utils.db.connection import credentials_from_url, describe_url

PASSWORDS = ["Pa/ss#1", "a?b@c:d/e", "100%sure#", "pässwörd/ü#?@", "@:/#?%é"]


def _pieces(password):
    """The password and every part of it 5 characters long or more ("Pa/ss" of "Pa/ss#1"), and every
    run of 3+ characters between its special characters."""
    parts = {password[i:j] for i in range(len(password)) for j in range(i + 5, len(password) + 1)}
    return {password} | parts | {piece for piece in re.split(r"[/#?@:%]", password) if len(piece) >= 3}


def _assert_hidden(password, text):
    for piece in _pieces(password):
        assert piece not in text, (piece, text)


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_url_with_an_unencoded_password_is_read_whole_and_described_without_it(password):
    url = f"postgresql://ann:{password}@db.example.com:6543/totesys"
    assert credentials_from_url(url) == {"host": "db.example.com", "port": 6543, "database": "totesys",
                                         "user": "ann", "password": password}
    assert describe_url(url) == "postgresql://ann@db.example.com:6543/totesys"


def test_a_url_whose_port_is_not_a_number_is_shown_without_its_password():
    assert describe_url("postgresql://ann:Pa/ss@db:x/y") == "postgresql://ann@db:x/y"
    # No "@": what looks like host:port may be user:password, so only the host is shown.
    assert describe_url("postgresql://ann:Pa/ss") == "postgresql://ann:<port not a number>"


@pytest.fixture
def role(pg_admin_url):
    """Factory: a login role with the given password and a database it owns; its URL, unencoded."""
    made = []

    def make(password):
        name = f"r_{uuid.uuid4().hex[:10]}"
        run_sql(pg_admin_url, f"CREATE ROLE {identifier(name)} LOGIN CREATEDB PASSWORD {literal(password)}")
        run_sql(pg_admin_url, f"CREATE DATABASE {identifier(name)} OWNER {identifier(name)}")
        made.append(name)
        admin = credentials_from_url(pg_admin_url)
        return f"postgresql://{name}:{password}@{admin['host']}:{admin['port']}/{name}"

    yield make
    for name in made:
        run_sql(pg_admin_url, f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)")
        run_sql(pg_admin_url, f"DROP ROLE IF EXISTS {identifier(name)}")


@pytest.mark.parametrize("password", PASSWORDS)
def test_the_right_unencoded_password_connects(role, capsys, tmp_path, password):
    url = role(password)
    assert main(["pending", "--warehouse", url, "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    _assert_hidden(password, out.out + out.err)


def _commands(url, state_dir):
    return [["run", "--source", url, "--warehouse", url, "--state-dir", state_dir],
            ["pending", "--warehouse", url, "--state-dir", state_dir],
            ["seed", "--target", url, "--scale", "0.01"],
            ["simulate", "--target", url, "--minutes", "1", "--state-dir", state_dir]]


@pytest.mark.parametrize("password", PASSWORDS)
def test_no_command_shows_a_wrong_or_unreachable_password(role, capsys, tmp_path, password):
    url = role(password)
    wrong = url.replace(f":{password}@", f":{password}x@")
    unreachable = re.sub(r"@127\.0\.0\.1:\d+/", f"@127.0.0.1:{free_port()}/", url)
    for candidate in (wrong, unreachable):
        for argv in _commands(candidate, str(tmp_path / "state")):
            status = main(argv)
            out = capsys.readouterr()
            assert status != 0 or argv[0] == "pending", argv
            _assert_hidden(password, out.out + out.err)
            _assert_hidden(password + "x", out.out + out.err)
