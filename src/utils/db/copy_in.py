"""The one way rows reach ``COPY ... FROM STDIN``: a pyarrow Table as CSV bytes."""
import io

import pyarrow as pa
import pyarrow.csv as pa_csv


def csv_stream(table: pa.Table) -> io.BytesIO:
    """The rows of ``table`` as CSV bytes for COPY (NULL = unquoted empty field, '' = quoted).

    Empty record batches are dropped first: pyarrow 18's write_csv emits a block of NUL bytes for a
    table whose first batch is empty (e.g. one built by concat_tables with an empty table)."""
    table = pa.Table.from_batches([batch for batch in table.to_batches() if batch.num_rows],
                                  schema=table.schema)
    out = io.BytesIO()
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False))
    out.seek(0)
    return out
