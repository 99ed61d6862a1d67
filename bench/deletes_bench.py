"""Delete-detection benchmark: the every-run cost of comparing primary-key sets (utils.ingest.deletes).

``run(ctx)`` takes ``{"source_url": seeded totesys}`` and returns the figures: the COPY of every source
table's key column in one REPEATABLE READ snapshot (one connection, and two as ingest uses by default),
the diff against the previous key set (read back from its Parquet bytes), and the key-set objects' size.
Standalone: ``venv/bin/python -m bench.deletes_bench`` (throwaway cluster, scale BENCH_SCALE, default 10).
Not a test: nothing here asserts a time.
"""
import io
import sys
import time

import numpy as np
import pyarrow.parquet as pq

from utils.catalog.source import SOURCE_TABLES
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.ingest.deletes import _key_set_bytes, read_key_sets


def _read_keys(source_url, connections):
    conns = [connect_to_db(credentials=credentials_from_url(source_url)) for _ in range(connections)]
    try:
        for conn in conns:
            conn.run("START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        started = time.perf_counter()
        keys = read_key_sets(conns, list(SOURCE_TABLES))
        return keys, time.perf_counter() - started
    finally:
        for conn in conns:
            close_db_connection(conn)


def run(ctx):
    keys, one = _read_keys(ctx["source_url"], 1)
    _, two = _read_keys(ctx["source_url"], 2)
    started = time.perf_counter()
    objects = {table: _key_set_bytes(ids) for table, ids in keys.items()}
    write_seconds = time.perf_counter() - started
    started = time.perf_counter()
    deleted = 0
    for table, body in objects.items():
        previous = pq.read_table(io.BytesIO(body))["id"].to_numpy()
        # Worst realistic diff: one key in ten gone.
        deleted += np.setdiff1d(previous, keys[table][::10], assume_unique=True).size
    diff_seconds = time.perf_counter() - started
    figures = {"keys": int(sum(len(ids) for ids in keys.values())),
               "copy_keys_seconds_1_connection": round(one, 3),
               "copy_keys_seconds_2_connections": round(two, 3),
               "write_key_sets_seconds": round(write_seconds, 3),
               "read_and_diff_seconds": round(diff_seconds, 3),
               "key_set_bytes": sum(len(body) for body in objects.values()), "diffed_deleted": int(deleted)}
    print(f"delete detection: {figures}", flush=True)
    return figures


if __name__ == "__main__":
    from bench.common import seeded_cluster
    with seeded_cluster() as context:
        run(context)
    sys.exit(0)
