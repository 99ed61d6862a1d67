"""Typed exceptions for every stage of the pipeline.

Messages name what is wrong (table, column, key) and never carry a secret value.
The state machine retries subclasses of ``RetryableError`` by their class name.
"""


class TotesysError(Exception):
    """Base class of every error the pipeline raises on purpose."""


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


class CorruptFileError(TotesysError):
    """An object in S3 is missing or cannot be read as what it claims to be; ``key`` names it."""

    def __init__(self, message, key=None):
        super().__init__(message)
        self.key = key


class StateConflictError(TotesysError):
    """The pipeline state changed under us (another run advanced it)."""


class RetryableError(TotesysError):
    """A transient failure: running the stage again later may succeed."""


class DatabaseUnavailableError(RetryableError):
    """The database could not be reached or the connection was lost."""


class ConcurrentRunError(RetryableError):
    """Another run of the same stage holds the lock."""


class StorageThrottledError(RetryableError):
    """S3 asked us to slow down."""
