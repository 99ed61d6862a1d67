"""The CSV -> Parquet sink a ``COPY ... TO STDOUT (FORMAT csv)`` writes into, with bounded memory."""
import io
import re
from collections import deque
from concurrent.futures import Executor, Future
from typing import Any, Callable, Deque, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from utils.catalog.source import INFINITY_MS
from utils.errors import SourceDataError

# CSV bytes buffered before they are parsed into one Parquet row group. Small enough that most of
# the parsing overlaps the reading of the same table (a 16 MiB chunk left most of the work for the
# end of each table), large enough that per-chunk costs stay negligible.
CHUNK_BYTES = 2 * 1024 * 1024
# Chunks a ParquetSink lets wait for its converter thread before write() blocks (bounded memory).
MAX_QUEUED_CHUNKS = 1
T = TypeVar("T")


class _Inline:
    """An executor that runs each job at once in the calling thread."""

    @staticmethod
    def submit(fn: Callable[..., T], *args: Any) -> "Future[T]":
        future: "Future[T]" = Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:
            future.set_exception(err)
        return future


INLINE = _Inline()


class ParquetSink:
    """A write-only stream for ``COPY ... TO STDOUT (FORMAT csv)`` that turns the CSV into Parquet.

    CSV bytes are buffered up to ``chunk_bytes`` and then parsed with pyarrow.csv using the
    table's explicit schema into one Parquet row group, so memory stays bounded by the chunk size
    (or the largest row) plus the (compressed) Parquet output. NULL is an unquoted empty field and
    the empty string a quoted one (PostgreSQL's CSV rules), so the two stay distinct. A row of any
    size parses: each chunk is one pyarrow block. Timestamps of years pyarrow's parser does not
    read (BC, after 9999) are converted by ``wall_time_to_epoch_ms`` (only in a chunk that holds
    one). The file written is readable with exactly ``schema``: a value the schema cannot hold (a
    NULL in a non-nullable field, 'infinity', an unparsable number) raises SourceDataError naming
    ``table``, the column and the row's id (never the value: see SourceDataError), never a raw
    ArrowInvalid.

    With an ``executor`` (one worker thread, so row groups keep their order) the chunks are parsed
    and written there while the caller keeps writing; at most MAX_QUEUED_CHUNKS wait behind the
    one being converted, and a conversion error is re-raised by the next ``write`` or by the
    close. Without one everything runs inline.
    """

    def __init__(self, schema: pa.Schema, chunk_bytes: int = CHUNK_BYTES, executor: Optional[Executor] = None,
                 table: Optional[str] = None) -> None:
        self.schema = schema
        self.table = table
        self.chunk_bytes = chunk_bytes
        self.rows = 0
        self._parts: List[bytes] = []
        self._size = 0
        self._executor: Union[Executor, _Inline] = executor or INLINE
        self._pending: Deque[Future] = deque()
        self._out = io.BytesIO()
        self._writer: Optional[pq.ParquetWriter] = None
        self._dictionary_columns = [field.name for field in schema if pa.types.is_string(field.type)]
        self._parse = pa_csv.ParseOptions(newlines_in_values=True)
        self._convert = self._convert_options({field.name: field.type for field in schema})
        # For a chunk holding a timestamp pyarrow cannot parse: timestamps read as text.
        self._convert_times_as_text = self._convert_options(
            {field.name: pa.string() if pa.types.is_timestamp(field.type) else field.type
             for field in schema})

    @staticmethod
    def _convert_options(column_types: Mapping[str, pa.DataType]) -> pa_csv.ConvertOptions:
        return pa_csv.ConvertOptions(
            column_types=column_types, null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"])

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.chunk_bytes:
            self._submit(final=False)

    def close(self) -> Tuple[Optional[io.BytesIO], int]:
        """Flush the rest; return (BytesIO of the Parquet file or None when no rows, row count)."""
        return self.close_async().result()

    def close_async(self) -> "Future[Tuple[Optional[io.BytesIO], int]]":
        """Queue the flush of the rest; return a Future of what ``close`` returns."""
        self._submit(final=True)
        return self._executor.submit(self._finish)

    def _submit(self, final: bool) -> None:
        data = b"".join(self._parts)
        cut = len(data) if final else record_boundary(data)
        self._parts = [data[cut:]] if cut < len(data) else []
        self._size = len(data) - cut
        if cut <= 0:
            return
        while len(self._pending) > MAX_QUEUED_CHUNKS:
            self._pending.popleft().result()
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()
        self._pending.append(self._executor.submit(self._flush, data[:cut] if cut < len(data) else data))

    def _flush(self, chunk: bytes) -> None:
        # One block per chunk: a block must hold whole rows, and a row may be larger than any default.
        read = pa_csv.ReadOptions(column_names=self.schema.names, block_size=len(chunk) + 1)
        try:
            parsed = pa_csv.read_csv(pa.BufferReader(chunk), read_options=read,
                                     parse_options=self._parse, convert_options=self._convert)
            columns = parsed.columns
        except pa.ArrowInvalid as err:
            error = self._parse_error(err, chunk, read)
            if error.column is None or not pa.types.is_timestamp(self.schema.field(error.column).type):
                raise error from err
            parsed = pa_csv.read_csv(pa.BufferReader(chunk), read_options=read, parse_options=self._parse,
                                     convert_options=self._convert_times_as_text)
            columns = [self._timestamps_from_text(field.name, column, parsed.columns)
                       if pa.types.is_timestamp(field.type) else column
                       for field, column in zip(self.schema, parsed.columns)]
        for field, column in zip(self.schema, columns):
            if column.null_count and not field.nullable:
                first_null = pc.index(pc.is_null(column), True).as_py()
                raise SourceDataError(self.table, field.name, self._row_id(columns, first_null),
                                      "NULL in a column the landing schema declares NOT NULL")
        table = pa.Table.from_arrays(columns, schema=self.schema)
        if self._writer is None:
            # Dictionary encoding only where it pays (text: codes, names, dates): on ids, amounts and
            # timestamps it made the files larger and tripled the time spent writing them.
            self._writer = pq.ParquetWriter(self._out, self.schema, compression="snappy",
                                            use_dictionary=self._dictionary_columns)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _timestamps_from_text(self, column_name: str, texts: pa.Array, columns: Sequence[pa.Array]
                              ) -> pa.Array:
        """timestamp[ms] array of PostgreSQL's text of ``timestamp`` values (any year); ``columns`` are
        the chunk's columns (for the id of a row that cannot be converted)."""
        millis = []
        for index, text in enumerate(texts.to_pylist()):
            try:
                millis.append(None if text is None else wall_time_to_epoch_ms(text))
            except ValueError as err:
                row_id = self._row_id(columns, index)
                raise SourceDataError(self.table, column_name, row_id, str(err)) from None
        return pa.array(millis, pa.int64()).cast(pa.timestamp("ms"))

    def _row_id(self, columns: Sequence[pa.Array], index: Optional[int]) -> Optional[int]:
        """The primary key (``<table>_id``) of row ``index`` of a chunk's ``columns``, or None when the
        schema has no such column, the index is unknown (-1) or the id itself is unreadable."""
        position = self.schema.get_field_index(f"{self.table}_id")
        if position < 0 or index is None or index < 0:
            return None
        row_id = columns[position][index].as_py()
        if isinstance(row_id, str):
            row_id = int(row_id) if row_id.isdigit() else None
        return row_id

    def _parse_error(self, err: pa.ArrowInvalid, chunk: bytes, read: pa_csv.ReadOptions) -> SourceDataError:
        """SourceDataError for a pyarrow CSV error: the column when pyarrow names it, the row's id when
        its invalid value can be found again in the chunk read as text. pyarrow's message quotes the
        value; it is cut out."""
        message = str(err)
        number = re.search(r"CSV column #(\d+)", message)
        column = self.schema.names[int(number.group(1))] if number else None
        shown = re.search(r"invalid value '(.*)'", message, re.DOTALL)
        row_id = None
        if column is not None and shown:
            as_text = pa_csv.read_csv(pa.BufferReader(chunk), read_options=read, parse_options=self._parse,
                                      convert_options=self._convert_options(
                                          {name: pa.string() for name in self.schema.names}))
            row_id = self._row_id(as_text.columns, pc.index(as_text[column], shown.group(1)).as_py())
        return SourceDataError(self.table, column, row_id, _without_values(message))

    def _finish(self) -> Tuple[Optional[io.BytesIO], int]:
        while self._pending:
            self._pending.popleft().result()
        if self._writer is None:
            return None, 0
        self._writer.close()
        self._out.seek(0)
        return self._out, self.rows


# pyarrow quotes the offending value ("invalid value 'x'") or the whole row ("Expected 4 columns, got 5:
# 1,GBP,..."): the message keeps what went wrong and drops the data.
_QUOTED_DATA = re.compile(r"(invalid value|columns, got \d+)\b.*", re.DOTALL)


def _without_values(message: str) -> str:
    """The first line of a pyarrow CSV error, without the value or row text it may quote."""
    return _QUOTED_DATA.sub(r"\1", message.splitlines()[0] if message else "")[:300]


_WALL_TIME = re.compile(r"(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?( BC)?")


def wall_time_to_epoch_ms(text: str) -> int:
    """Milliseconds from 1970-01-01 00:00 to the wall time ``text`` (PostgreSQL's ISO output of a
    ``timestamp``: 'YYYY-MM-DD HH:MM:SS[.ffffff][ BC]', any year, proleptic Gregorian calendar),
    truncated to the millisecond. 'infinity' and '-infinity' become INFINITY_MS and -INFINITY_MS (the
    ends of timestamp[ms]: the landing zone keeps the row, the transform quarantines it). Raises
    ValueError for anything else."""
    if text in ("infinity", "-infinity"):
        return INFINITY_MS if text == "infinity" else -INFINITY_MS
    match = _WALL_TIME.fullmatch(text)
    if not match:
        raise ValueError("not a finite timestamp: timestamp[ms] cannot hold it")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    if match.group(8):
        year = 1 - year  # 1 BC is year 0
    # Days from 1970-01-01 to year-month-day (H. Hinnant's days_from_civil), exact for any year.
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    fraction = int((match.group(7) or "0").ljust(6, "0")) // 1000
    return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + fraction


def record_boundary(buffer: bytes) -> int:
    """Return the length of the longest prefix of CSV ``buffer`` that ends at a record boundary.

    A newline ends a record only outside quotes, i.e. where the number of '"' before it is even
    (an escaped quote is two quotes, so the parity rule holds). 0 when there is no such newline.
    """
    pos = buffer.rfind(b"\n")
    while pos >= 0:
        if buffer.count(b'"', 0, pos) % 2 == 0:
            return pos + 1
        pos = buffer.rfind(b"\n", 0, pos)
    return 0
