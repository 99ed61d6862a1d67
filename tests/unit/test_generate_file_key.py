"""utils.generate_file_key: the object key of a table's batch."""
from datetime import datetime

import pytest

from utils.errors import DateFormatError
from utils.generate_file_key import generate_file_key


def test_generate_file_key_scheme():
    key = generate_file_key("sales_order", datetime(2024, 1, 2, 3, 4, 5, 60708))
    assert key == "sales_order/2024/01/02/030405060708.parquet"
    manifest_key = generate_file_key("_batches", datetime(2024, 1, 2), "json")
    assert manifest_key == "_batches/2024/01/02/000000000000.json"
    with pytest.raises(DateFormatError):
        generate_file_key("t", "2024-01-02")
    with pytest.raises(ValueError):
        generate_file_key("../x", datetime(2024, 1, 2))
