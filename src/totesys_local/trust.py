"""`totesys verify | resync | deletes` on this machine.

verify: the databases of ``--source/--warehouse`` (or the embedded ones of the state folder) and the
landing zone saved under ``<state-dir>/s3`` (read straight from its files: no emulated AWS needed).
resync and ``deletes --approve``: one local execution whose input is ``{"resync": [...]}`` or
``{"approve_deletes": [...]}`` (as on AWS); ``deletes`` alone lists what the guard holds.
"""
import io
import json
import os
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Tuple, Union

from botocore.exceptions import ClientError

from totesys_local import cluster, folder_identity, runner
from totesys_local.local_state import BUCKETS, REGION, save_buckets
from totesys_local.runner import SOURCE_DB, WAREHOUSE_DB, source_and_warehouse
from utils.config import DEFAULT_INGEST_OVERLAP_SECONDS
from utils.contracts import HeldDeletes
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url, describe_url
from utils.db.identity import database_identity

EXIT_CANNOT_RUN = 2


class FolderS3:
    """The one S3 call `verify` makes (``get_object``), served from ``<folder>/<bucket>/<key>``."""

    def __init__(self, folder: Union[str, Path]) -> None:
        self.folder = Path(folder)

    def get_object(self, Bucket: str, Key: str) -> Dict[str, Any]:  # noqa: N803 - boto3's argument names
        path = self.folder / Bucket / Key
        if not path.is_file():
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": Key}}, "GetObject")
        body = path.read_bytes()
        return {"Body": io.BytesIO(body), "ETag": f'"{len(body)}"'}


def _overlap_seconds() -> int:
    return int(os.environ.get("INGEST_OVERLAP_SECONDS", DEFAULT_INGEST_OVERLAP_SECONDS))


def database_urls(args: Namespace) -> Tuple[str, str]:
    """(source URL, warehouse URL): the flags, the environment, else the state folder's embedded ones."""
    source, warehouse = source_and_warehouse(args)
    if source and warehouse:
        return source, warehouse
    state_dir = Path(args.state_dir)
    if not (state_dir / "cluster.json").exists():
        raise LookupError(f"no embedded databases under {state_dir}/: run `make run` first, "
                          "or give --source and --warehouse")
    pg = cluster.local_cluster(state_dir)
    return source or pg.url(SOURCE_DB), warehouse or pg.url(WAREHOUSE_DB)


def command_verify(args: Namespace, out: Callable[[str], None] = print) -> int:
    """The exit status: 0 every table matched, 1 any mismatch, 2 when verify cannot run."""
    from utils.verify.report import render_json, render_text
    from utils.verify.run import verify
    try:
        source_url, warehouse_url = database_urls(args)
        source = connect_to_db(credentials=credentials_from_url(source_url), timezone=None, role="totesys")
        try:
            warehouse = connect_to_db(credentials=credentials_from_url(warehouse_url), role="warehouse")
            try:
                # The landing zone is the recorded source's; the warehouse may be another one loaded from it
                # (a rebuild into a new database), which read_landed checks against the ledger.
                folder_identity.refuse_other_databases(
                    args.state_dir, {"source": (source_url, database_identity(source))})
                report = verify(source, warehouse, FolderS3(Path(args.state_dir) / "s3"),
                                BUCKETS["INGEST_BUCKET"], _overlap_seconds(),
                                connect_warehouse=lambda: connect_to_db(
                                    credentials=credentials_from_url(warehouse_url), role="warehouse"))
            finally:
                close_db_connection(warehouse)
        finally:
            close_db_connection(source)
    except Exception as err:  # noqa: BLE001 - verify's contract: exit 2 with one line when it cannot run
        print(f"totesys verify: cannot run: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if args.json:
        out(render_json(report))
    else:
        for line in render_text(report):
            out(line)
    return report.exit_code


def command_resync(args: Namespace) -> int:
    """One execution that lands the named tables in full (checked before anything runs)."""
    from utils.ingest.resync import resync_tables
    request = {"resync": list(args.tables)}
    resync_tables(request)  # an unknown name fails here, with the allow-list's message
    return runner.run_with_request(args, request)


def held_deletions(state_dir: Union[str, Path]) -> Dict[str, HeldDeletes]:
    """{table: {"rows", "table_rows"}} the last ingest run held, from the saved ingest state."""
    path = Path(state_dir) / "s3" / BUCKETS["INGEST_BUCKET"] / "_state" / "ingest.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("held_deletes") or {}


def command_deletes(args: Namespace, out: Callable[[str], None] = print) -> int:
    """Without --approve: list the held deletions. With it: one execution recording those tables'."""
    if args.approve:
        from utils.ingest.delete_guard import approved_tables
        request = {"approve_deletes": list(args.approve)}
        approved_tables(request)
        return runner.run_with_request(args, request)
    held = held_deletions(args.state_dir)
    if not held:
        out("no deletions held")
    for table, entry in sorted(held.items()):
        out(f"{table}: {entry['rows']:,} of {entry['table_rows']:,} rows deleted in totesys, held "
            f"(approve: totesys deletes --approve {table})")
    return 0


def command_rebuild(args: Namespace, out: Callable[[str], None] = print) -> int:
    """Rebuild the whole warehouse from the state folder's landing zone into the empty database ``--into``
    (a new processed generation, saved with the buckets); with ``--tables``, then replace those tables of
    the warehouse (``--warehouse``, else the embedded one) in place. The exit status."""
    from unittest import mock

    import boto3
    from moto import mock_aws

    from totesys_local.aws_emulation import account_environment
    from totesys_local.lazy_s3 import lazy_buckets
    from utils.rebuild.run import rebuild_warehouse
    s3_dir = Path(args.state_dir) / "s3"
    if not (s3_dir / BUCKETS["INGEST_BUCKET"] / "_state" / "ingest.json").is_file():
        print(f"totesys rebuild: no landing zone under {s3_dir}/: run `make run` first", file=sys.stderr)
        return 1
    credentials = credentials_from_url(args.into)
    # The stages' log lines go to a file, as for `totesys run`, not into the command's output.
    log_path = Path(args.state_dir) / "logs" / f"rebuild-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = account_environment(REGION, TOTESYS_LOG_FILE=str(log_path), **BUCKETS)
    with mock.patch.dict(os.environ, environment), mock_aws(), lazy_buckets(s3_dir):
        conn = connect_to_db(credentials, role="warehouse")
        try:
            result = rebuild_warehouse(conn, boto3.client("s3", region_name=REGION), BUCKETS["INGEST_BUCKET"],
                                       BUCKETS["PROCESSED_BUCKET"], generation=args.resume,
                                       connect=lambda: connect_to_db(credentials, role="warehouse"))
        finally:
            close_db_connection(conn)
            save_buckets(s3_dir)
    rows = sum(result["tables"].values())
    if args.tables:
        return _replace_in_place(args, credentials, out)
    out(f"rebuilt {describe_url(args.into)} from the landing zone: {len(result['transformed'])} batch(es) "
        f"transformed into generation {result['generation']}, {len(result['loaded'])} loaded, {rows:,} rows "
        f"(logs: {log_path})")
    return 0


def _replace_in_place(args: Namespace, scratch_credentials: Mapping[str, Any],
                      out: Callable[[str], None]) -> int:
    """After a rebuild into the scratch database: copy ``args.tables`` into the warehouse in place."""
    from utils.rebuild.in_place import replace_tables
    _, warehouse_url = source_and_warehouse(args)
    if not warehouse_url:
        warehouse_url = cluster.local_cluster(Path(args.state_dir)).url(WAREHOUSE_DB)
    live = connect_to_db(credentials_from_url(warehouse_url), role="warehouse")
    scratch = connect_to_db(scratch_credentials, role="warehouse")
    try:
        replaced = replace_tables(live, scratch, args.tables)
    finally:
        close_db_connection(live)
        close_db_connection(scratch)
    out(f"replaced in {describe_url(warehouse_url)}, one transaction each: "
        + ", ".join(f"{table} ({rows:,} rows)" for table, rows in replaced.items()))
    return 0


COMMANDS = {"verify": command_verify, "resync": command_resync, "deletes": command_deletes,
            "rebuild": command_rebuild}
