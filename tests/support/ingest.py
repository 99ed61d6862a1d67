"""Ingest test helpers: what a run landed, checked against what the source holds."""
import collections
import io

import pyarrow.parquet as pq

from tests.support.db import run_sql
from utils.aws.manifests import walk_manifests
from utils.aws.objects import read_json
from utils.aws.state import read_state
from utils.catalog.source import PRIMARY_KEYS, SOURCE_TABLES


def read_table(s3, bucket, key):
    return pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def manifest_chain(s3, bucket):
    """Manifests named by the state pointer and its prev links, oldest first."""
    state, _ = read_state(s3, bucket, "ingest")
    chain, _ = walk_manifests(lambda key: read_json(s3, bucket, key), state.get("manifest_key"))
    return [manifest for _, manifest in chain]


def versions_in(table, name):
    """(table, primary key, last_updated) of every row of an Arrow table."""
    return [(name, pk, updated) for pk, updated in
            zip(table[PRIMARY_KEYS[name]].to_pylist(), table["last_updated"].to_pylist())]


def landed_versions(s3, bucket):
    """Counter of the row versions reachable from the state pointer."""
    counter = collections.Counter()
    for manifest in manifest_chain(s3, bucket):
        for name, entry in manifest["tables"].items():
            counter.update(versions_in(read_table(s3, bucket, entry["key"]), name))
    return counter


def source_versions(url):
    found = collections.Counter()
    for name in SOURCE_TABLES:
        for pk, updated in run_sql(url, f'SELECT {PRIMARY_KEYS[name]}, last_updated FROM "{name}"'):
            found[(name, pk, updated)] += 1
    return found


def assert_each_version_landed_once(s3, bucket, url, superseded=0):
    """Every current source row version is reachable from the state pointer exactly once, and
    besides them only ``superseded`` older versions (rows updated since they were landed)."""
    landed = landed_versions(s3, bucket)
    current = source_versions(url)
    assert set(current) <= set(landed), set(current) - set(landed)
    assert max(landed.values()) == 1
    assert len(landed) == len(current) + superseded


def batch_versions(s3, bucket, result):
    counter = collections.Counter()
    for name, key in result.items():
        counter.update(versions_in(read_table(s3, bucket, key), name))
    return counter
