"""INGEST_MODE and CDC_SLOT_NAME: cursor by default, anything else than the two modes or a slot name
PostgreSQL would refuse is a ConfigError naming the variable."""
import pytest

from utils.config import load_settings
from utils.errors import ConfigError


@pytest.fixture
def required(monkeypatch):
    monkeypatch.setenv("INGEST_BUCKET", "i")
    monkeypatch.setenv("PROCESSED_BUCKET", "p")
    monkeypatch.delenv("INGEST_MODE", raising=False)
    monkeypatch.delenv("CDC_SLOT_NAME", raising=False)
    return monkeypatch


def test_cursor_and_the_default_slot_unless_set(required):
    settings = load_settings()
    assert (settings.ingest_mode, settings.cdc_slot_name) == ("cursor", "totesys_cdc")
    required.setenv("INGEST_MODE", " CDC ")
    required.setenv("CDC_SLOT_NAME", "prod_cdc_2")
    settings = load_settings()
    assert (settings.ingest_mode, settings.cdc_slot_name) == ("cdc", "prod_cdc_2")


@pytest.mark.parametrize("variable, value", [("INGEST_MODE", "wal"), ("CDC_SLOT_NAME", "Bad-Name"),
                                             ("CDC_SLOT_NAME", "x" * 64), ("CDC_SLOT_NAME", "a;drop")])
def test_a_bad_mode_or_slot_name_is_a_config_error_naming_the_variable(required, variable, value):
    required.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()
