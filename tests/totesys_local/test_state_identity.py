"""A state is tied to its databases (issue 19, item 4): the ingest state pointer records its source's
identity (AWS and local alike), the local state folder its source and warehouse; a run that reaches
another database is refused naming both, a flag (CLI) or an event key (AWS) re-points it deliberately."""
import json

import pytest

import ingest
from tests.support.db import run_sql
from totesys_local.aws_emulation import put_credentials_secret
from totesys_local.cli import main
from utils.aws.state import read_state
from utils.db.connection import describe_url
from utils.db.identity import DatabaseIdentityError


def test_the_ingest_state_records_its_source_and_refuses_another(env, other_source, ingest_log):
    s3, bucket, url = env
    ingest.lambda_handler({}, None)
    state, _ = read_state(s3, bucket, "ingest")
    recorded = state["source"]
    assert recorded["database"] == url.rsplit("/", 1)[1] and recorded["system_identifier"].isdigit()
    assert "password" not in json.dumps(state)

    put_credentials_secret("test/totesys", other_source)  # the secret pointed at another database
    with pytest.raises(DatabaseIdentityError) as refused:
        ingest.lambda_handler({}, None)
    message = str(refused.value)
    assert f'database "{recorded["database"]}"' in message
    assert f'database "{other_source.rsplit("/", 1)[1]}"' in message and "repoint_source" in message
    assert read_state(s3, bucket, "ingest")[0] == state  # nothing advanced

    with pytest.raises(Exception, match="repoint_source must be true or false"):
        ingest.lambda_handler({"repoint_source": "yes"}, None)
    ingest.lambda_handler({"repoint_source": True}, None)
    assert read_state(s3, bucket, "ingest")[0]["source"]["database"] == other_source.rsplit("/", 1)[1]


@pytest.mark.slow
def test_a_state_folder_refuses_a_run_without_its_urls_or_with_other_databases(
        tmp_path, capsys, totesys_url, warehouse_url, new_database, totesys_template):
    state = tmp_path / "state"
    args = ["--source", totesys_url, "--warehouse", warehouse_url, "--state-dir", str(state)]
    assert main(["run", *args]) == 0
    capsys.readouterr()
    recorded = json.loads((state / "databases.json").read_text())
    assert recorded["source"]["url"] == describe_url(totesys_url) and not recorded["source"]["embedded"]
    facts = run_sql(warehouse_url, "SELECT count(*) FROM fact_payment")[0][0]

    # The case: retry without the URLs must not start, seed and diff an embedded demo database.
    assert main(["retry", "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert f"belongs to the source database {describe_url(totesys_url)}" in err, err
    assert "--repoint" in err and not (state / "cluster.json").exists()

    other = new_database(template=totesys_template)
    assert main(["run", "--source", other, "--warehouse", warehouse_url, "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert describe_url(totesys_url) in err and describe_url(other) in err, err
    assert "--repoint" in err
    assert run_sql(warehouse_url, "SELECT count(*) FROM fact_payment")[0][0] == facts  # nothing loaded

    assert main(["run", "--source", other, "--warehouse", warehouse_url, "--state-dir", str(state),
                 "--repoint"]) == 0
    capsys.readouterr()
    assert json.loads((state / "databases.json").read_text())["source"]["url"] == describe_url(other)
    assert main(["run", "--source", other, "--warehouse", warehouse_url, "--state-dir", str(state)]) == 0


def test_a_first_run_that_lands_nothing_does_not_tie_the_folder(tmp_path, capsys, totesys_url, warehouse_url):
    """Swapped URLs: the first run fails before landing anything (the 'source' is the warehouse), so the
    folder is not recorded as theirs and the corrected command runs without --repoint."""
    state = tmp_path / "state"
    swapped = ["--source", warehouse_url, "--warehouse", totesys_url]
    assert main(["run", *swapped, "--state-dir", str(state)]) == 1
    capsys.readouterr()
    assert not (state / "databases.json").exists()
    right = ["--source", totesys_url, "--warehouse", warehouse_url]
    assert main(["run", *right, "--state-dir", str(state)]) == 0
    recorded = json.loads((state / "databases.json").read_text())
    assert recorded["source"]["url"] == describe_url(totesys_url)
    assert recorded["warehouse"]["url"] == describe_url(warehouse_url)
