"""The fast ``COPY ... TO STDOUT`` reader: the server's CopyData messages read in blocks.

It replaces pg8000's ``handle_messages`` for one statement and reads the connection's ``_sock`` and
``message_types``: internals of the pg8000 releases in SUPPORTED_PG8000. With any other pg8000 installed
``fast_copy_supported()`` is False and the ingest uses pg8000's own ``stream=`` COPY (slower, same rows).
"""
import struct
import types
from typing import Any, List

import pg8000
import pg8000.exceptions

_COPY_DATA, _READY_FOR_QUERY = b"d", b"Z"
_COPY_DATA_BYTE = _COPY_DATA[0]
_SIZE = struct.Struct("!i")
# The pg8000 releases whose Connection internals the block reader was written against (requirements.txt
# pins one of them; the installed one is checked at run time, in case another is installed).
SUPPORTED_PG8000 = ("1.31.",)


def fast_copy_supported() -> bool:
    """True when the installed pg8000 is a release the block reader was written for."""
    return pg8000.__version__.startswith(SUPPORTED_PG8000)


def copy_out(conn: Any, sql: str, stream: Any, fast: bool = True) -> Any:
    """``conn.run(sql, stream=stream)`` for a ``COPY ... TO STDOUT``, with the server's messages read
    in blocks.

    PostgreSQL sends one CopyData message per row and pg8000 handles each with two socket reads
    and several copies, which costs more than parsing the CSV. For the duration of this call the
    connection reads whatever is buffered, splits it into messages itself and hands the rows of
    each block to ``stream.write`` in one call (blocks always end at a row boundary). Every other
    message goes to pg8000's own handlers, so errors, notices and the end of the statement behave
    exactly as in ``conn.run``. With ``fast=False`` it is exactly ``conn.run(sql, stream=stream)``.
    """
    if not fast:
        return conn.run(sql, stream=stream)
    conn.handle_messages = types.MethodType(_handle_messages_in_blocks, conn)
    try:
        return conn.run(sql, stream=stream)
    finally:
        del conn.handle_messages


def _handle_messages_in_blocks(conn: Any, context: Any) -> None:
    """Drop-in for pg8000's Connection.handle_messages (1.31): same dispatch, block-wise reads."""
    sock, handlers = conn._sock, conn.message_types
    code = None
    try:
        while code != _READY_FOR_QUERY:
            block = sock.peek(1)
            pos, end = 0, len(block)
            rows: List[bytes] = []
            append, unpack_size = rows.append, _SIZE.unpack_from
            while pos + 5 <= end:
                stop = pos + 1 + unpack_size(block, pos + 1)[0]
                if stop > end:
                    break
                if block[pos] == _COPY_DATA_BYTE:
                    append(block[pos + 5:stop])
                    pos = stop
                    continue
                code = block[pos:pos + 1]
                if rows:
                    context.stream_write(b"".join(rows))
                    rows.clear()
                handlers[code](block[pos + 5:stop], context)
                pos = stop
                if code == _READY_FOR_QUERY:
                    break
            if pos:
                sock.read(pos)
                if rows:
                    context.stream_write(b"".join(rows))
                continue
            # The next message is not wholly buffered: read it the plain way.
            header = _read_exactly(sock, 5)
            code = header[:1]
            data = _read_exactly(sock, int.from_bytes(header[1:], "big") - 4)
            if code == _COPY_DATA:
                context.stream_write(data)
            else:
                handlers[code](data, context)
    except OSError as err:
        raise pg8000.exceptions.InterfaceError("network error") from err
    if context.error is not None:
        raise context.error


def _read_exactly(sock: Any, size: int) -> bytes:
    data = sock.read(size)
    if len(data) != size:
        raise pg8000.exceptions.InterfaceError("network error")
    return data
