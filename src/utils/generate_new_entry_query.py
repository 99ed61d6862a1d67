"""Seed interface: SQL text for 'the rows of a source table changed in a time range' (the column list
is the ingest's own, ``utils.ingest.snapshot.select_list``)."""
from pg8000.native import identifier

from utils.errors import DateFormatError
from utils.format_time import format_time, parse_time
from utils.catalog.source import check_source_table
from utils.ingest.snapshot import select_list


def generate_new_entry_query(table_name, start_time, end_time):
    """Return a query for the rows of ``table_name`` with start_time <= last_updated < end_time.

    ``start_time`` and ``end_time`` are format_time strings ('YYYY-MM-DD HH:MM:SS[.ffffff]');
    anything else raises DateFormatError, an unknown table raises UnknownTableError.
    The times are not in the text: the query carries the bound parameters ``:start_time`` and
    ``:end_time`` (pg8000 native style), e.g.
    ``query_db(sql, connect_to_db, close_db_connection, start_time=start, end_time=end)``.
    """
    check_source_table(table_name)
    start, end = parse_time(start_time), parse_time(end_time)
    if start > end:
        raise DateFormatError(
            f"start_time {format_time(start)} is after end_time {format_time(end)}")
    # Identifiers come from the allow-list (check_source_table) and are quoted; times are bound.
    return (f"SELECT {select_list(table_name)} FROM {identifier(table_name)} "  # nosec B608
            "WHERE last_updated >= CAST(:start_time AS timestamp) "
            "AND last_updated < CAST(:end_time AS timestamp)")
