"""parquet_data: dicts of columns or rows to Parquet bytes, with an optional explicit schema."""
from datetime import datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from utils.compat import parquet_data
from utils.catalog.source import SOURCE_SCHEMAS


def test_columns_round_trip():
    out = parquet_data({"a": [1, 2], "b": ["x", None]})
    assert pq.read_table(out).to_pydict() == {"a": [1, 2], "b": ["x", None]}


def test_query_db_rows_with_the_declared_schema_keep_exact_types():
    rows = [{"currency_id": 1, "currency_code": "GBP",
             "created_at": datetime(2022, 11, 3, 14, 20, 51, 563000),
             "last_updated": datetime(2022, 11, 3, 14, 20, 51)}]
    table = pq.read_table(parquet_data({"response": rows}, schema=SOURCE_SCHEMAS["currency"]))
    assert table.schema.equals(SOURCE_SCHEMAS["currency"])
    assert table.to_pylist() == rows


def test_decimals_keep_the_declared_precision():
    schema = pa.schema([("price", pa.decimal128(10, 2))])
    table = pq.read_table(parquet_data({"price": [Decimal("2.50")]}, schema=schema))
    assert table.schema.field("price").type == pa.decimal128(10, 2)


def test_rejects_non_dicts():
    with pytest.raises(TypeError, match="expects a dict, got list"):
        parquet_data([{"a": 1}])
