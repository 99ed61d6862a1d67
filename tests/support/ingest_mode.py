"""The ingest mode of a test session (no tests): ``INGEST_MODE=cdc`` in the environment of pytest (``make
test-cdc``) makes every pipeline the tests build ingest through CDC, each test with a replication slot of
its own (slots are per cluster, databases per test), dropped when the test ends. Unset or ``cursor``: the
default mode, nothing changes. A test that holds only in cursor mode (it inspects the cursor's windows,
say) is marked ``@pytest.mark.cursor_only("why")`` and skipped in a CDC session with that reason."""
import os
import uuid

# Read once at import, before any test sets INGEST_MODE for itself.
SESSION_MODE = os.environ.get("INGEST_MODE", "").strip().lower() or "cursor"


def cdc_session():
    """True when this pytest session runs every pipeline in CDC mode."""
    return SESSION_MODE == "cdc"


def new_slot_name(prefix="t_cdc"):
    """A replication slot name no other test of the cluster uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def drop_idle_slot(admin_url, name):
    """Drop slot ``name`` on the server of ``admin_url`` when it exists and nobody reads it; return
    whether one was dropped (a slot left behind keeps WAL for as long as the cluster lives)."""
    from totesys_local.cluster import admin_connection
    conn = admin_connection(admin_url)
    try:
        return bool(conn.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             "WHERE slot_name = :name AND NOT active", name=name))
    finally:
        conn.close()
