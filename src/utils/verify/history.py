"""Fact history against the landing zone: every order/payment version landed in a loaded batch is in its
fact table once, or quarantined in ``etl_rejected_rows``; and the fact table holds nothing else.

A version is (source id, last_updated). The landed versions (deduplicated: overlapping windows land a
version twice) are summed in Python: count, sum of ids, and sum of ``((id * 1000003) XOR ms) & (2**31 - 1)``
where ms is last_updated in epoch milliseconds of its wall-clock value; the warehouse sums the same over its
fact versions and unresolved rejected versions, in SQL. Only when the sums differ are the versions
themselves read and compared, to name them.
"""
import io
from dataclasses import dataclass, field
from typing import Any, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from utils.errors import CorruptFileError

FACTS = {"sales_order": "fact_sales_order", "purchase_order": "fact_purchase_order",
         "payment": "fact_payment"}
MIX = 1000003
LOW_BITS = 2 ** 31 - 1


@dataclass
class HistoryResult:
    """One fact table's history check: versions landed, versions held (facts + quarantined), and up
    to ``limit`` versions of each kind of difference (``(id, 'YYYY-MM-DD HH:MM:SS.fff')``)."""
    table: str
    landed: int = 0
    held: int = 0
    not_in_warehouse: List[Tuple[int, str]] = field(default_factory=list)
    not_landed: List[Tuple[int, str]] = field(default_factory=list)
    not_in_warehouse_count: int = 0
    not_landed_count: int = 0

    @property
    def matched(self):
        return self.not_in_warehouse_count == 0 and self.not_landed_count == 0


def landed_versions(s3_client, bucket, manifests, source_table):
    """The distinct (id, ms) versions of ``source_table`` in ``manifests``: two int64 numpy arrays."""
    key_column = f"{source_table}_id"
    parts = []
    for _, manifest in manifests:
        entry = manifest["tables"].get(source_table)
        if entry:
            parts.append(_read_versions(s3_client, bucket, entry["key"], key_column))
    if not parts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    table = pa.concat_tables(parts).drop_null()
    table = pa.table({"id": table["id"].cast(pa.int64()), "ms": table["ms"].cast(pa.int64())})
    # A hash grouping (pyarrow) drops the versions two overlapping batches both landed.
    distinct = table.group_by(["id", "ms"]).aggregate([])
    return (distinct["id"].to_numpy(zero_copy_only=False).astype(np.int64),
            distinct["ms"].to_numpy(zero_copy_only=False).astype(np.int64))


def _read_versions(s3_client, bucket, key, key_column):
    """The (id, ms) columns of one landed file."""
    table = read_landed_columns(s3_client, bucket, key, [key_column, "last_updated"])
    return table.rename_columns(["id", "ms"])


def read_landed_columns(s3_client: Any, bucket: str, key: str, columns: List[str]) -> pa.Table:
    """``columns`` of the landed file ``key``; CorruptFileError naming it when it cannot be read."""
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        # ParquetFile, not read_table: read_table imports pyarrow.dataset (over a second, once).
        table = pq.ParquetFile(io.BytesIO(body)).read(columns=columns)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        raise CorruptFileError(f"cannot read s3://{bucket}/{key}: {code}", key=key) from None
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CorruptFileError(f"s3://{bucket}/{key} is not a readable landing file ({type(err).__name__})",
                               key=key) from None
    return table


def _sums(ids, ms):
    mixed = ((ids * MIX) ^ ms) & LOW_BITS
    return int(ids.size), int(ids.sum()), int(mixed.sum())


def _warehouse_relation(fact, source_table):
    key = f"{source_table}_id"
    # Integer arithmetic for the date part: numeric extract() of the whole timestamp costs twice as much.
    stamp = ("(last_updated_date - DATE '1970-01-01')::bigint * 86400000 "
             "+ round(date_part('epoch', last_updated_time) * 1000)::bigint")
    rejected_stamp = "(extract(epoch FROM last_updated) * 1000)::bigint"
    # Names come from FACTS (constants); the source table name is bound.
    return (f"SELECT {key}::bigint AS id, {stamp} AS ms FROM {fact} UNION ALL "  # nosec B608
            f"SELECT source_id, {rejected_stamp} FROM etl_rejected_rows WHERE source_table = :source "
            "AND resolved_batch_id IS NULL AND last_updated IS NOT NULL AND source_id IS NOT NULL")


def check_history(conn, s3_client, bucket, manifests, limit=10):
    """[HistoryResult] for the three fact tables; see the module docstring."""
    return [_check_one(conn, s3_client, bucket, manifests, source, fact, limit)
            for source, fact in FACTS.items()]


def _check_one(conn, s3_client, bucket, manifests, source, fact, limit):
    ids, ms = landed_versions(s3_client, bucket, manifests, source)
    relation = _warehouse_relation(fact, source)
    held = conn.run("SELECT count(*), coalesce(sum(id), 0), "
                    f"coalesce(sum(((id * {MIX}) # ms) & {LOW_BITS}), 0) "
                    f"FROM ({relation}) v", source=source)[0]  # nosec B608
    result = HistoryResult(fact, landed=int(ids.size), held=int(held[0]))
    if tuple(int(value) for value in held) == _sums(ids, ms):
        return result
    rows = conn.run(f"SELECT id, ms FROM ({relation}) v", source=source)  # nosec B608
    landed_set = set(zip(ids.tolist(), ms.tolist()))
    held_set = {(int(i), int(m)) for i, m in rows}
    missing, extra = sorted(landed_set - held_set), sorted(held_set - landed_set)
    result.not_in_warehouse_count, result.not_landed_count = len(missing), len(extra)
    result.not_in_warehouse = [_version(v) for v in missing[:limit]]
    result.not_landed = [_version(v) for v in extra[:limit]]
    return result


def _version(version):
    row_id, ms = version
    stamp = np.datetime64(int(ms), "ms").astype(str).replace("T", " ")
    return int(row_id), stamp
