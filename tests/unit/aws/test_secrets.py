"""utils.aws.secrets: the credentials a secret must hold (reading secrets from moto:
tests/integration/test_shared_utils.py)."""
import pytest

from utils.aws.secrets import validate_credentials
from utils.errors import CredentialsError


def test_credentials_without_a_password_mean_no_password():
    creds = {"host": "h", "port": 5432, "database": "d", "user": "u"}
    assert validate_credentials(creds, "x")["password"] == ""
    assert validate_credentials(dict(creds, password=None), "x")["password"] == ""
    with pytest.raises(CredentialsError, match=r"lacks key\(s\): database"):
        validate_credentials(dict(creds, database=""), "x")
