"""utils.config: settings from the environment, each bad value named."""
import pytest

from utils.config import load_settings
from utils.errors import ConfigError


def test_settings_read_from_environment(monkeypatch):
    monkeypatch.setenv("INGEST_BUCKET", "in")
    monkeypatch.setenv("PROCESSED_BUCKET", "out")
    monkeypatch.setenv("INGEST_OVERLAP_SECONDS", "120")
    settings = load_settings()
    assert (settings.ingest_bucket, settings.processed_bucket, settings.ingest_overlap_seconds) == \
        ("in", "out", 120)


def test_settings_missing_bucket_names_the_variable(monkeypatch):
    monkeypatch.delenv("INGEST_BUCKET", raising=False)
    monkeypatch.setenv("PROCESSED_BUCKET", "out")
    with pytest.raises(ConfigError, match="INGEST_BUCKET"):
        load_settings()


@pytest.mark.parametrize("bad", ["soon", "-5"])
def test_settings_reject_bad_overlap(monkeypatch, bad):
    monkeypatch.setenv("INGEST_BUCKET", "in")
    monkeypatch.setenv("PROCESSED_BUCKET", "out")
    monkeypatch.setenv("INGEST_OVERLAP_SECONDS", bad)
    with pytest.raises(ConfigError, match="INGEST_OVERLAP_SECONDS"):
        load_settings()
