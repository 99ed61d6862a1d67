"""utils.format_time: the one text format of times, anything else refused."""
from datetime import datetime

import pytest

from utils.errors import DateFormatError
from utils.format_time import format_time, parse_time


def test_format_and_parse_time():
    moment = datetime(2024, 11, 3, 14, 20, 49, 962000)
    assert format_time(moment) == "2024-11-03 14:20:49.962000"
    assert parse_time("2024-11-03 14:20:49.962000") == moment
    assert parse_time("2024-11-03 14:20:49") == datetime(2024, 11, 3, 14, 20, 49)


@pytest.mark.parametrize("bad", ["2024/11/03", "", None, "2024-11-03T14:20:49"])
def test_parse_time_rejects_other_formats(bad):
    with pytest.raises(DateFormatError):
        parse_time(bad)


def test_format_time_rejects_non_datetimes():
    with pytest.raises(DateFormatError):
        format_time("2024-11-03")
