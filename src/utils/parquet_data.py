"""Turn a Python dict of rows or columns into Parquet bytes (seed interface)."""
import io

import pyarrow as pa
import pyarrow.parquet as pq


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
    out_buffer = io.BytesIO()
    pq.write_table(table, out_buffer)
    out_buffer.seek(0)
    return out_buffer
