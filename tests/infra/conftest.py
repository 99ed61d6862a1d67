"""Fixtures shared by the infrastructure tests: the two Terraform stacks, parsed once per module."""
import pytest

from tests.infra.hcl import IMMUTABLE, MAIN, load_stack


@pytest.fixture(scope="module")
def main_stack():
    return load_stack(MAIN)


@pytest.fixture(scope="module")
def immutable_stack():
    return load_stack(IMMUTABLE)
