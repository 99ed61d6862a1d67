"""The agreed text form of a time bound."""
from datetime import datetime

from utils.errors import DateFormatError

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def format_time(date_time: datetime) -> str:
    """Return ``date_time`` as 'YYYY-MM-DD HH:MM:SS.ffffff' (raises DateFormatError for non-datetimes)."""
    if not isinstance(date_time, datetime):
        raise DateFormatError(f"expected a datetime, got {type(date_time).__name__}")
    return date_time.strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """Inverse of format_time; also accepts no fractional part. Raises DateFormatError."""
    if isinstance(text, str):
        for pattern in (TIME_FORMAT, "%Y-%m-%d %H:%M:%S"):
            try:
                return datetime.strptime(text, pattern)
            except ValueError:
                continue
    raise DateFormatError(
        f"time {text!r} is not in the format 'YYYY-MM-DD HH:MM:SS[.ffffff]'")
