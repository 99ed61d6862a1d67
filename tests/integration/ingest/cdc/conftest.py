"""CDC fixtures: INGEST_MODE=cdc with a slot name of the test's own (slots are per cluster, databases per
test). What the warehouse must equal and the slot's row: tests/support/cdc.py."""
import uuid

import pytest


@pytest.fixture
def cdc_mode(monkeypatch):
    """INGEST_MODE=cdc with a fresh slot name; returns the slot name."""
    name = f"t_cdc_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("INGEST_MODE", "cdc")
    monkeypatch.setenv("CDC_SLOT_NAME", name)
    return name
