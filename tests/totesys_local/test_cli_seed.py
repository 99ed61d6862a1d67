"""``totesys seed`` and ``totesys simulate`` through the CLI entry point: output lines and exit codes."""
import re

import pytest

from totesys_local.cli import main
from totesys_local.cluster import free_port
from utils.db.connection import connect_to_db, credentials_from_url
from utils.catalog.source import SOURCE_TABLES


def counts(url):
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        sql = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{table}")' for table in SOURCE_TABLES)
        return dict(zip(SOURCE_TABLES, conn.run(sql)[0]))
    finally:
        conn.close()


def public_tables(url):
    conn = connect_to_db(credentials=credentials_from_url(url))
    try:
        return conn.run("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0]
    finally:
        conn.close()


def test_seed_prints_the_row_count_of_every_table(new_database, capsys):
    url = new_database()
    assert main(["seed", "--target", url, "--scale", "0.05", "--seed", "3"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("seeded totesys: address 30, counterparty 20, currency 3, department 8, ")
    printed = dict((name, int(n)) for name, n in re.findall(r"(\w+) (\d+)", out.split(": ", 1)[1]))
    assert printed == counts(url)
    assert printed["sales_order"] == round(11_187 * 0.05)


def test_seed_into_a_seeded_database_is_one_error_line_and_exit_1(totesys_url, capsys):
    before = counts(totesys_url)
    assert main(["seed", "--target", totesys_url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert re.fullmatch(r"totesys seed: error: database already holds totesys tables or types \(.+\): "
                        r"seed needs a database without them\n", err)
    assert counts(totesys_url) == before


def test_seed_to_an_unreachable_server_is_one_error_line(capsys):
    port = free_port()
    assert main(["seed", "--target", f"postgresql://u:secret-pw@127.0.0.1:{port}/db"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"totesys seed: error: cannot reach database at 127.0.0.1:{port}/db: ")
    assert err.count("\n") == 1 and "secret-pw" not in err


@pytest.mark.parametrize("scale", ["0", "-2", "lots"])
def test_seed_with_a_bad_scale_is_a_usage_error(new_database, capsys, scale):
    url = new_database()
    with pytest.raises(SystemExit) as raised:
        main(["seed", "--target", url, "--scale", scale])
    assert raised.value.code == 2
    assert "argument --scale" in capsys.readouterr().err
    assert public_tables(url) == 0


def test_simulate_prints_what_happened(totesys_url, capsys):
    before = counts(totesys_url)
    assert main(["simulate", "--target", totesys_url, "--minutes", "30", "--seed", "5"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("simulated: new sales orders ")
    pairs = re.findall(r"([a-z ]+?) (\d+)(?:, |\n)", out.split(": ", 1)[1])
    summary = {name: int(n) for name, n in pairs}
    after = counts(totesys_url)
    assert summary["new sales orders"] == after["sales_order"] - before["sales_order"] >= 1
    assert summary["new payments"] == after["payment"] - before["payment"]
    for guaranteed in ("payments marked paid", "sales orders updated", "addresses changed", "staff changed"):
        assert summary[guaranteed] >= 1


def test_simulate_on_an_empty_database_is_one_error_line(new_database, capsys):
    url = new_database()
    assert main(["simulate", "--target", url, "--minutes", "5"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert re.fullmatch(r"totesys simulate: error: database has no totesys tables \(missing .+\): "
                        r"run totesys seed first\n", err)
    assert public_tables(url) == 0
