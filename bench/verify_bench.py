"""`totesys verify`'s time on a loaded warehouse (called by `make bench-scale` after the x100 backfill).

Times one verify of the whole warehouse (all ten tables and the fact history), then one after a single
warehouse row was changed (the narrowing to the differing id), and notes the machine's load average.
On a machine shared with other jobs the wall-clock time says little, so it also counts the CPU seconds
verify costs: this process's, and the PostgreSQL cluster's (every backend and parallel worker: the
postmaster's children, live or reaped). Not a test: prints figures.

Standalone, against a warehouse loaded already (e.g. the one `make bench-scale` builds, kept): with the
ingest bucket's S3 endpoint in the environment, ``venv/bin/python -m bench.verify_bench SOURCE_URL
WAREHOUSE_URL INGEST_BUCKET`` (the fact row it changes is changed back afterwards).
"""
import os
import time
from pathlib import Path

import boto3

from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.verify.run import verify


TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    """(ppid, own CPU seconds, reaped children's CPU seconds) of a process from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / TICK
    reaped = (int(fields[13]) + int(fields[14])) / TICK
    return int(fields[1]), own, reaped


def cluster_cpu(postmaster):
    """CPU seconds used so far by the cluster of ``postmaster`` (pid) and all its children."""
    total = sum(_stat(postmaster)[1:])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid, own, reaped = _stat(entry.name)
            except (OSError, IndexError):
                continue  # gone meanwhile
            if ppid == postmaster:
                total += own + reaped
    return total


def _postmaster(conn):
    data = conn.run("SHOW data_directory")[0][0]
    return int(Path(data, "postmaster.pid").read_text().split()[0])


def _timed(source_url, warehouse_url, bucket):
    source = connect_to_db(credentials=credentials_from_url(source_url), timezone=None)
    warehouse = connect_to_db(credentials=credentials_from_url(warehouse_url))
    try:
        postmaster = _postmaster(source)
        cpu_before, own_before = cluster_cpu(postmaster), time.process_time()
        started = time.perf_counter()
        second = lambda: connect_to_db(credentials=credentials_from_url(warehouse_url))  # noqa: E731
        report = verify(source, warehouse, boto3.client("s3"), bucket, 3600, connect_warehouse=second)
        seconds = round(time.perf_counter() - started, 2)
        time.sleep(1)  # verify's second warehouse connection has exited: its CPU counts once reaped
        cpu = {"postgres": round(cluster_cpu(postmaster) - cpu_before, 2),
               "python": round(time.process_time() - own_before, 2)}
        return seconds, cpu, report
    finally:
        close_db_connection(source)
        close_db_connection(warehouse)


def _flip(warehouse_url):
    """Change one fact row (the latest payment's ``paid``); a second call changes it back."""
    warehouse = connect_to_db(credentials=credentials_from_url(warehouse_url))
    try:
        warehouse.run("UPDATE fact_payment SET paid = NOT paid WHERE payment_record_id = "
                      "(SELECT max(payment_record_id) FROM fact_payment)")
    finally:
        close_db_connection(warehouse)


def run(source_url, warehouse_url, bucket, restore=False):
    """{"seconds", "seconds_one_row_changed", "source_rows", "mismatches", "load_average"}."""
    seconds, cpu, report = _timed(source_url, warehouse_url, bucket)
    _flip(warehouse_url)
    try:
        changed_seconds, changed_cpu, changed = _timed(source_url, warehouse_url, bucket)
    finally:
        if restore:
            _flip(warehouse_url)
    figures = {"seconds": seconds, "cpu_seconds": cpu, "seconds_one_row_changed": changed_seconds,
               "cpu_seconds_one_row_changed": changed_cpu,
               "source_rows": sum(t.matched + sum(t.counts.values()) - t.counts["extra"]
                                  for t in report.tables),
               "mismatches": report.mismatches, "mismatches_after_change": changed.mismatches,
               "load_average": os.getloadavg()}
    print(f"verify: {seconds} s, CPU {cpu} ({figures['source_rows']:,} source rows compared, "
          f"{report.mismatches} mismatches); after changing one fact row: {changed_seconds} s, "
          f"CPU {changed_cpu}, "
          f"{changed.mismatches} mismatch(es); load average {figures['load_average']}", flush=True)
    return figures


if __name__ == "__main__":
    import sys
    run(*sys.argv[1:4], restore=True)
