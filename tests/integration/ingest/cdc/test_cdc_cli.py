"""``totesys cdc status|drop-slot`` and the CDC line of ``totesys pending``, on a real slot."""
from tests.support.cdc import slot_row
from tests.support.db import connect
from totesys_local.cli import build_parser, run_in_process
from totesys_local.pending import find_progress, print_pending, Pending
from utils.ingest.cdc.slot import create_slot


def cli(*argv):
    return run_in_process(build_parser().parse_args(list(argv)))


def test_status_shows_the_retained_wal_drop_slot_removes_it_and_pending_shows_it(
        source_url, cdc_mode, capsys):
    conn = connect(source_url)
    try:
        create_slot(conn, cdc_mode)
        conn.run("CREATE TABLE cdc_wal_filler AS SELECT g FROM generate_series(1, 20000) g")
    finally:
        conn.close()
    assert cli("cdc", "status", "--source", source_url) == 0
    status = capsys.readouterr().out
    assert f"CDC slot {cdc_mode}: retains" in status and "no cap: set max_slot_wal_keep_size" in status

    progress = find_progress({"cdc": {"slot": cdc_mode}, "tables": {}}, source_url, None)
    lines = []
    print_pending(Pending(progress=progress), out=lines.append)
    assert any(line.startswith(f"CDC slot {cdc_mode}: retains") for line in lines)

    assert cli("cdc", "drop-slot", "--source", source_url, "--slot", cdc_mode) == 0
    assert "dropped CDC slot" in capsys.readouterr().out and slot_row(source_url, cdc_mode) is None
    assert cli("cdc", "drop-slot", "--source", source_url) == 0
    assert "nothing to drop" in capsys.readouterr().out
    assert cli("cdc", "status", "--source", source_url) == 0
    assert "none on this database" in capsys.readouterr().out
