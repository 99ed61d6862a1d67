"""``in_version_order`` and ``ids_distinct`` (utils/load/merge.py): whether a batch's fact rows can be
appended without the DISTINCT ON's sort (every version once and in version order), and whether the
rollups can read them without sorting for each id's latest (each id once) (issue 24)."""
from datetime import date, time

import pyarrow as pa
import pytest

from utils.load.merge import ids_distinct, in_version_order

VERSION = ("payment_id", "last_updated_date", "last_updated_time")
D1, D2, T1, T2 = date(2024, 1, 1), date(2024, 1, 2), time(1), time(2)


def rows(*values):
    return pa.table({"payment_id": pa.array([v[0] for v in values], pa.int32()),
                     "last_updated_date": pa.array([v[1] for v in values], pa.date32()),
                     "last_updated_time": pa.array([v[2] for v in values], pa.time64("us"))})


@pytest.mark.parametrize("table, expected", [
    (rows((1, D1, T1), (1, D1, T2), (1, D2, T1), (2, D1, T1)), True),   # ids, then dates, then times
    (rows((1, D1, T1)), True),
    (rows((1, D1, T1), (1, D1, T1)), False),                         # a version twice
    (rows((1, D2, T1), (1, D1, T2)), False),                         # an id's versions out of order
    (rows((2, D1, T1), (1, D2, T2)), False),                         # ids out of order
    (rows((1, None, T1), (2, D1, T1)), False),                       # a NULL stamp
    (rows((1, D1, T1), (2, D1, None)), False),
    (None, True),
    (rows(), True),
])
def test_only_a_batch_of_distinct_versions_in_order_is_in_version_order(table, expected):
    assert in_version_order(table, VERSION) is expected


def test_chunked_columns_are_read_whole():
    table = pa.concat_tables([rows((1, D1, T1)), rows((2, D1, T1)), rows((2, D1, T2))])
    assert in_version_order(table, VERSION)
    assert not in_version_order(pa.concat_tables([table, rows((2, D1, T2))]), VERSION)


def test_ids_distinct_says_whether_each_id_appears_once():
    assert ids_distinct(None, "sales_order_id")
    assert ids_distinct(pa.table({"sales_order_id": pa.array([], pa.int32())}), "sales_order_id")
    assert ids_distinct(pa.table({"sales_order_id": [3, 1, 2]}), "sales_order_id")
    assert not ids_distinct(pa.table({"sales_order_id": [1, 2, 1]}), "sales_order_id")
    assert not ids_distinct(pa.table({"sales_order_id": pa.array([1, None], pa.int32())}), "sales_order_id")
