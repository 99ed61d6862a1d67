"""Fact history against the landing zone: every order/payment version landed in a loaded batch is in its
fact table once, or quarantined in ``etl_rejected_rows``; and the fact table holds nothing else.

A version is (source id, last_updated) and its values: an update that kept its stamp is a second version
of that stamp (docs/DESIGN.md, "A version is its stamp and its values"). The landed (id, last_updated)
pairs (deduplicated: overlapping windows land a version twice) are summed in Python: count, sum of ids, and
sum of ``((id * 1000003) XOR ms) & (2**31 - 1)`` where ms is last_updated in epoch milliseconds of its
wall-clock value; the warehouse sums the same over its fact rows and unresolved rejected versions, in SQL.
Equal sums are the common case (one version per stamp, each held once). Only when they differ are the
landed files' values read (the columns the fact keeps: a change of a column it drops is no new version)
and the versions compared as multisets of (id, last_updated), one per distinct value-version landed
against the fact rows and quarantine records held, to name the differences: a version missing, or one
held twice (``version_differences``).
"""
import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from utils.aws.objects import conform_table
from utils.catalog.source import LANDING_SCHEMAS, optional_columns
from utils.errors import CorruptFileError
from utils.transform.quarantine import UNUSED_COLUMNS

FACTS = {"sales_order": "fact_sales_order", "purchase_order": "fact_purchase_order",
         "payment": "fact_payment"}
MIX = 1000003
# A version as the check counts it: (source id, last_updated in epoch milliseconds).
Version = Tuple[int, int]
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
    def matched(self) -> bool:
        return self.not_in_warehouse_count == 0 and self.not_landed_count == 0


def landed_versions(s3_client: Any, bucket: str, manifests: Sequence[Tuple[str, Any]],
                    source_table: str) -> Tuple[np.ndarray, np.ndarray]:
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


def _read_versions(s3_client: Any, bucket: str, key: str, key_column: str) -> pa.Table:
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


def _sums(ids: np.ndarray, ms: np.ndarray) -> Tuple[int, int, int]:
    mixed = ((ids * MIX) ^ ms) & LOW_BITS
    return int(ids.size), int(ids.sum()), int(mixed.sum())


def _warehouse_relation(fact: str, source_table: str) -> str:
    key = f"{source_table}_id"
    # Integer arithmetic for the date part: numeric extract() of the whole timestamp costs twice as much.
    stamp = ("(last_updated_date - DATE '1970-01-01')::bigint * 86400000 "
             "+ round(date_part('epoch', last_updated_time) * 1000)::bigint")
    rejected_stamp = "(extract(epoch FROM last_updated) * 1000)::bigint"
    # Names come from FACTS (constants); the source table name is bound.
    return (f"SELECT {key}::bigint AS id, {stamp} AS ms, false AS quarantined FROM {fact} "  # nosec B608
            f"UNION ALL SELECT source_id, {rejected_stamp}, true FROM etl_rejected_rows "
            "WHERE source_table = :source AND resolved_batch_id IS NULL AND last_updated IS NOT NULL "
            "AND source_id IS NOT NULL")


def check_history(conn: Any, s3_client: Any, bucket: str, manifests: Sequence[Tuple[str, Any]],
                  limit: int = 10) -> List[HistoryResult]:
    """[HistoryResult] for the three fact tables; see the module docstring."""
    return [_check_one(conn, s3_client, bucket, manifests, source, fact, limit)
            for source, fact in FACTS.items()]


def _check_one(conn: Any, s3_client: Any, bucket: str, manifests: Sequence[Tuple[str, Any]], source: str,
               fact: str, limit: int) -> HistoryResult:
    ids, ms = landed_versions(s3_client, bucket, manifests, source)
    relation = _warehouse_relation(fact, source)
    held = conn.run("SELECT count(*), coalesce(sum(id), 0), "
                    f"coalesce(sum(((id * {MIX}) # ms) & {LOW_BITS}), 0) "
                    f"FROM ({relation}) v", source=source)[0]  # nosec B608
    result = HistoryResult(fact, landed=int(ids.size), held=int(held[0]))
    if tuple(int(value) for value in held) == _sums(ids, ms):
        return result
    rows = conn.run(f"SELECT id, ms, quarantined FROM ({relation}) v", source=source)  # nosec B608
    landed = landed_value_versions(s3_client, bucket, manifests, source)
    facts: "Counter[Version]" = Counter()
    quarantined: "Counter[Version]" = Counter()
    for row_id, ms, is_record in rows:
        (quarantined if is_record else facts)[(int(row_id), int(ms))] += 1
    result.landed = sum(landed.values())
    missing, extra = version_differences(landed, facts, quarantined)
    result.not_in_warehouse_count, result.not_landed_count = len(missing), len(extra)
    result.not_in_warehouse = [_version(v) for v in missing[:limit]]
    result.not_landed = [_version(v) for v in extra[:limit]]
    return result


def version_differences(landed: "Counter[Version]", facts: "Counter[Version]",
                        quarantined: "Counter[Version]") -> Tuple[List[Version], List[Version]]:
    """(versions missing, versions held but not landed), sorted, from the counts per (id, ms) of the
    distinct value-versions ``landed``, the fact rows and the unresolved quarantine records (one per
    value-version: ``value_key``, docs/RELIABILITY.md defect 16). Each landed value-version must be a fact
    row or quarantined: missing when the landed ones outnumber both together; a fact row is extra when
    the facts outnumber the landed ones, a record when nothing of its stamp landed. A record of a stamp
    whose landed version the facts hold too is no extra version: a row quarantined as a future row and
    loaded once the clock passed its stamp (same stamp, same values), or a quarantined version beside its
    fix under the same stamp (docs/RELIABILITY.md defect 14)."""
    missing: List[Version] = []
    extra: List[Version] = []
    for version in landed.keys() | facts.keys() | quarantined.keys():
        number, held, records = landed[version], facts[version], quarantined[version]
        missing += [version] * max(0, number - held - records)
        extra += [version] * (max(0, held - number) + (records if not number else 0))
    return sorted(missing), sorted(extra)


def landed_value_versions(s3_client: Any, bucket: str, manifests: Sequence[Tuple[str, Any]],
                          source_table: str) -> "Counter[Tuple[int, int]]":
    """{(id, ms): distinct value-versions of that stamp} of ``source_table`` in ``manifests``, the values
    being the columns the fact keeps."""
    columns = [name for name in LANDING_SCHEMAS[source_table].names
               if name not in UNUSED_COLUMNS.get(source_table, ())]
    key_column = f"{source_table}_id"
    # As the transform reads a landed file: a nullable column it lacks (landed before the column was added
    # to the catalogue) is NULL there (docs/DESIGN.md, "Adding a column"; docs/RELIABILITY.md defect 15).
    schema = pa.schema([LANDING_SCHEMAS[source_table].field(name) for name in columns])
    keys = [manifest["tables"][source_table]["key"] for _, manifest in manifests
            if manifest["tables"].get(source_table)]
    parts = [conform_table(read_landed_columns(s3_client, bucket, key, columns), source_table, schema,
                           f"s3://{bucket}/{key}", optional_columns(source_table)) for key in keys]
    if not parts:
        return Counter()
    table = pa.concat_tables(parts)
    table = table.filter(pc.and_(pc.is_valid(table[key_column]), pc.is_valid(table["last_updated"])))
    distinct = table.group_by(columns).aggregate([])
    ids = distinct[key_column].cast(pa.int64()).to_pylist()
    stamps = distinct["last_updated"].cast(pa.int64()).to_pylist()
    return Counter(zip(ids, stamps))


def _version(version: Tuple[int, int]) -> Tuple[int, str]:
    row_id, ms = version
    stamp = np.datetime64(int(ms), "ms").astype(str).replace("T", " ")
    return int(row_id), stamp
