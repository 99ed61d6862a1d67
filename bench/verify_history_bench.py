"""The cost of `verify`'s value-version path (``utils.verify.history.landed_value_versions``) on landed
files of x100 size: the path every `verify` takes for a fact once it holds two versions of one stamp
(docs/DESIGN.md, "A version is its stamp and its values", the history check's cost).

Synthetic landed files (the landing schema, random values, one file per batch of a backfill) in moto S3 in
this process, so the CPU seconds printed include moto serving the reads (a real S3 read costs the network
instead). Not a test: prints figures.

``venv/bin/python -m bench.verify_history_bench [SALES_ORDER_ROWS PAYMENT_ROWS FILES]`` (default 1,100,000,
1,600,000 and 20).
"""
import io
import os
import sys
import time
from decimal import Decimal

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from moto import mock_aws

from utils.catalog.source import LANDING_SCHEMAS
from utils.verify.history import landed_value_versions

BUCKET = "verify-history-bench"


def landed_table(name, rows):
    """``rows`` random rows of ``name``'s landing schema, ids 1..rows."""
    rng = np.random.default_rng(1)
    columns = {}
    for field in LANDING_SCHEMAS[name]:
        kind = field.type
        if field.name == f"{name}_id":
            columns[field.name] = pa.array(np.arange(1, rows + 1, dtype=np.int32))
        elif pa.types.is_timestamp(kind):
            offsets = rng.integers(0, 3 * 10 ** 10, rows).astype("timedelta64[ms]")
            columns[field.name] = pa.array(np.datetime64("2024-01-01T00:00:00.000") + offsets, kind)
        elif pa.types.is_integer(kind):
            columns[field.name] = pa.array(rng.integers(1, 1000, rows).astype(np.int32), kind)
        elif pa.types.is_decimal(kind):
            cents = rng.integers(1, 10 ** 5, rows)
            columns[field.name] = pa.array([Decimal(int(value)).scaleb(-2) for value in cents], kind)
        elif pa.types.is_boolean(kind):
            columns[field.name] = pa.array(rng.integers(0, 2, rows).astype(bool))
        else:
            columns[field.name] = pa.array([f"2024-0{i % 9 + 1}-1{i % 9}" for i in range(rows)], kind)
    return pa.table(columns, schema=LANDING_SCHEMAS[name])


def main(sales_orders=1_100_000, payments=1_600_000, files=20):
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-2")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        for name, rows in (("sales_order", sales_orders), ("payment", payments)):
            table, step, manifests = landed_table(name, rows), -(-rows // files), []
            for number in range(files):
                body = io.BytesIO()
                pq.write_table(table.slice(number * step, step), body)
                s3.put_object(Bucket=BUCKET, Key=f"{name}/{number}.parquet", Body=body.getvalue())
                manifests.append((f"m{number}", {"tables": {name: {"key": f"{name}/{number}.parquet"}}}))
            cpu, wall = time.process_time(), time.perf_counter()
            landed_value_versions(s3, BUCKET, manifests, name)
            print(f"{name}: {rows:,} rows in {files} files: {time.perf_counter() - wall:.2f} s wall, "
                  f"{time.process_time() - cpu:.2f} s CPU (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main(*(int(value) for value in sys.argv[1:4]))
