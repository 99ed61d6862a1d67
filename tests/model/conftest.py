"""Fixtures of the model-based tests: the kept emulated account and the model's template databases."""
import pytest

from tests.model import harness, profile


@pytest.fixture(scope="module")
def model_environment(pg_admin_url):
    """The kept emulated account and the two template databases, for every history of a module."""
    with harness.kept_account():
        profile.prepare(pg_admin_url)
        yield
