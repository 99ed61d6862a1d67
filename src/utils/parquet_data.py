"""Seed interface: a Python dict of rows or columns as a Parquet file (written as the pipeline writes
its files, ``utils.aws.objects.parquet_bytes``)."""
import io

import pyarrow as pa

from utils.aws.objects import parquet_bytes


def parquet_data(py_dict, schema=None):
    """Return a BytesIO holding ``py_dict`` as a Parquet file.

    ``py_dict`` is either columnar (``{column: [values]}``) or query_db's shape
    (``{name: [row dicts]}``, one key). Pass ``schema`` (a pyarrow.Schema, e.g. from
    utils.catalog.source.SOURCE_SCHEMAS) to fix the types instead of inferring them; values that do not
    fit the schema raise pyarrow's error. Raises TypeError for anything but a dict.
    """
    if not isinstance(py_dict, dict):
        raise TypeError(f"parquet_data expects a dict, got {type(py_dict).__name__}")
    values = list(py_dict.values())
    if len(values) == 1 and isinstance(values[0], list) and all(isinstance(v, dict) for v in values[0]):
        table = pa.Table.from_pylist(values[0], schema=schema)
    else:
        table = pa.Table.from_pydict(py_dict, schema=schema)
    return io.BytesIO(parquet_bytes(table))
