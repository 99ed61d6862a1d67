"""Unit tests are pure (tests/README.md): a unit test that asks for a database or the emulated AWS account
fails here, naming the folder it belongs in."""
import pytest

MOVE = "unit tests use no PostgreSQL and no moto: move this test to tests/integration/<package>/"


@pytest.fixture(scope="session")
def pg_admin_url():
    pytest.fail(MOVE, pytrace=False)


@pytest.fixture
def aws_env():
    pytest.fail(MOVE, pytrace=False)
