"""Typed exceptions for every stage of the pipeline: one class per meaning.

Messages name what is wrong (table, column, key) and never carry a secret value; the same facts are
attributes (``table``, ``key``, ``batch_id``: None when the error is not about one), so a caller can act
on them without parsing the message. The state machine retries ``RetryableError`` subclasses and
``StateConflictError`` by their class name.
"""
from typing import Any, Optional


class TotesysError(Exception):
    """Base class of every error the pipeline raises on purpose.

    ``table`` (a source or warehouse table), ``key`` (an S3 key) and ``batch_id`` say what it is about.
    """

    def __init__(self, message: str = "", *, table: Optional[str] = None, key: Optional[str] = None,
                 batch_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.table, self.key, self.batch_id = table, key, batch_id


class ConfigError(TotesysError):
    """A required setting (environment variable) is missing or invalid."""


class CredentialsError(TotesysError):
    """A credentials secret is missing, unreadable or lacks a required key."""


class InvalidEventError(TotesysError):
    """A handler event does not have the documented shape."""


class UnknownTableError(InvalidEventError):
    """A table name is not in the allow-list."""


class DateFormatError(TotesysError):
    """A time bound is not in the agreed 'YYYY-MM-DD HH:MM:SS[.ffffff]' format."""


class SchemaMismatchError(TotesysError):
    """A Parquet file or a warehouse table does not have the expected columns/types."""


class ForeignKeyViolationError(TotesysError):
    """A fact row references a dimension row the warehouse does not hold; ``table`` and ``constraint``
    name the foreign key that found it. The batch is rolled back."""

    def __init__(self, table: str, constraint: str, detail: str = "") -> None:
        super().__init__(f"{table}: foreign key {constraint} violated" + (f" ({detail})" if detail else "")
                         + "; the batch was rolled back", table=table)
        self.constraint = constraint


class CorruptFileError(TotesysError):
    """An object in S3 is missing or cannot be read as what it claims to be; ``key`` names it."""

    def __init__(self, message: str, key: Optional[str] = None, *, table: Optional[str] = None) -> None:
        super().__init__(message, key=key, table=table)


class ObjectExistsError(TotesysError):
    """An object this run means to write once already exists (``key``); objects are never
    overwritten. Whether that is a retry's identical object or a conflict is the caller's call
    (``utils.aws.objects.write_once``)."""


class RetryableError(TotesysError):
    """A transient failure: running the stage again later may succeed."""


class DatabaseUnavailableError(RetryableError):
    """The database could not be reached or the connection was lost."""


class ConcurrentRunError(RetryableError):
    """Another run of the same stage holds the lock."""


class StorageThrottledError(RetryableError):
    """S3 asked us to slow down."""


class StateConflictError(RetryableError):
    """The pipeline state changed under us: another run advanced a state pointer (``key``) or wrote
    different bytes where this run writes (retryable by the state machine: the next attempt starts
    from the new state)."""


class TlsError(ConfigError):
    """A database's TLS handshake failed for a reason a retry cannot mend: its certificate does not
    verify against the CA bundle, its name does not match the host, or it does not speak TLS."""


class SchemaDriftError(TotesysError):
    """A source table no longer has a column the pipeline reads, or has it with another type.

    ``table`` and ``column`` name it; ``expected`` and ``found`` are the SQL types (``found`` is
    None when the column, or the whole table, is gone).
    """

    def __init__(self, table: str, column: Optional[str], expected: str, found: Optional[str]) -> None:
        where = f"totesys.{table}" + (f".{column}" if column else "")
        what = f"has type {found}" if found else "is missing"
        super().__init__(f"schema drift: {where} {what}; expected {expected}. Nothing was landed: update "
                         "utils/catalog/source.py (and the transform) for the new schema, or restore it",
                         table=table)
        self.column, self.expected, self.found = column, expected, found


class SourceDataError(TotesysError):
    """A source value cannot be represented in the landing file's type.

    ``table``, ``column`` (None when pyarrow did not say) and ``row_id`` (the row's primary key; None
    when it cannot be told) say where. The value itself is never carried, in the message or as an
    attribute: the message reaches Step Functions' execution history and the logs (kept for a year),
    which must hold no customer data. Read the row in totesys by its id.
    """

    def __init__(self, table: Optional[str], column: Optional[str], row_id: Any, detail: str) -> None:
        where = f"totesys.{table}" + (f".{column}" if column else "")
        row = f" in the row {table}_id = {row_id}" if row_id is not None else ""
        super().__init__(f"cannot land {where}{row}: {detail}", table=table)
        self.column, self.row_id = column, row_id
