"""generate_new_entry_query: start inclusive, end exclusive, times bound, names allow-listed."""
import pytest

from utils.errors import DateFormatError, UnknownTableError
from utils.compat import generate_new_entry_query
from utils.ingest.snapshot import select_list


def test_select_list_is_quoted_in_physical_order():
    assert select_list("design") == ('"design_id", "created_at", "design_name", "file_location", '
                                     '"file_name", "last_updated"')
    assert select_list("transaction").startswith('"transaction_id", "transaction_type"')


@pytest.mark.parametrize("start, end", [
    ("2024-01-01", "2024-01-02 00:00:00"),
    ("2024-01-01 00:00:00", "yesterday"),
    ("2024-01-01 00:00:00'; DROP TABLE staff; --", "2024-01-02 00:00:00"),
    (None, "2024-01-02 00:00:00"),
])
def test_bad_time_formats_raise_date_format_error(start, end):
    with pytest.raises(DateFormatError, match="is not in the format"):
        generate_new_entry_query("staff", start, end)


def test_start_after_end_is_an_error():
    with pytest.raises(DateFormatError, match="is after end_time"):
        generate_new_entry_query("staff", "2024-01-02 00:00:00", "2024-01-01 00:00:00")


@pytest.mark.parametrize("table", ["_prisma_migrations", "staff; DROP TABLE staff", "", None])
def test_unknown_tables_are_rejected(table):
    with pytest.raises(UnknownTableError, match="unknown table"):
        generate_new_entry_query(table, "2024-01-01 00:00:00", "2024-01-02 00:00:00")
