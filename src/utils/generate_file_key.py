"""The one S3 key scheme: ``name/yyyy/mm/dd/hhmmssffffff.extension``."""
from datetime import datetime

from utils.errors import DateFormatError


def generate_file_key(table_name: str, end_time: datetime, extension: str = "parquet") -> str:
    """Return the immutable key for ``table_name``'s object of the batch ending at ``end_time``."""
    if not isinstance(end_time, datetime):
        raise DateFormatError(f"end_time must be a datetime, got {type(end_time).__name__}")
    if not isinstance(table_name, str) or not table_name or ".." in table_name:
        raise ValueError(f"bad table name for a key: {table_name!r}")
    return f"{table_name}/{end_time:%Y/%m/%d/%H%M%S%f}.{extension.lstrip('.')}"
