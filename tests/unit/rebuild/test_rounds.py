"""The rebuild's rounds without the state machine (utils.rebuild.rounds): which batches a round takes, and
the rebuild input refused naming what is wrong (the rebuild run on AWS: tests/integration/rebuild/)."""
import pytest


def _manifests(*rows):
    return [(f"k{n}", {"tables": {"fact_sales_order": {"key": "x", "rows": count},
                                  "dim_staff": {"key": "y", "rows": 99}}}) for n, count in enumerate(rows)]


@pytest.mark.parametrize("batches, max_rows, rows, taken", [
    (2, 0, (5, 5, 5), 2),       # the batch bound
    (9, 10, (4, 5, 2), 2),      # the row bound (rows of the bounded tables only)
    (9, 10, (4, 6, 1), 2),      # exactly at the row bound
    (9, 3, (50, 1), 1),         # one batch over the row bound is still taken: progress
    (9, 0, (50, 60, 70), 3),    # 0: no row cap
])
def test_a_round_takes_the_oldest_batches_within_both_bounds(batches, max_rows, rows, taken):
    from utils.catalog.warehouse import FACTS
    from utils.rebuild.rounds import _rows_of, bounded
    pending = _manifests(*rows)
    assert bounded(batches, max_rows, _rows_of(FACTS))(pending) == pending[:taken]


@pytest.mark.parametrize("request_, named", [
    ([], "must be a JSON object"),
    ({"tables": ["dim_staff"]}, "unknown key"),
    ({"generation": "a/b"}, "'generation'"),
    ({"generation": ""}, "'generation'"),
    ({"batches_per_invocation": 0}, "'batches_per_invocation'"),
    ({"batches_per_invocation": 501}, "'batches_per_invocation'"),
    ({"batches_per_invocation": True}, "'batches_per_invocation'"),
    ({"batches_per_invocation": "2"}, "'batches_per_invocation'"),
])
def test_a_bad_rebuild_input_is_refused_naming_what_is_wrong(request_, named):
    from utils.errors import InvalidEventError
    from utils.rebuild.rounds import parse_request
    with pytest.raises(InvalidEventError, match=named):
        parse_request(request_)
