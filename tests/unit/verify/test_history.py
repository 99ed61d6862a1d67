"""verify's history check: the landed value-versions of each stamp against the fact rows and the
quarantine records held (``utils.verify.history.version_differences``)."""
from collections import Counter

import pytest

from utils.verify.history import version_differences

V = (7, 1_700_000_000_123)


@pytest.mark.parametrize("landed, facts, records, missing, extra", [
    (1, 1, 0, 0, 0),  # a version loaded
    (1, 0, 1, 0, 0),  # a version quarantined
    (1, 1, 1, 0, 0),  # quarantined as a future row, loaded once the clock passed its stamp (defect 14)
    (2, 1, 1, 0, 0),  # a version quarantined beside its fix under the same stamp
    (2, 2, 0, 0, 0),  # an update that kept its stamp (defect 8)
    (1, 0, 0, 1, 0),  # a version lost
    (2, 1, 0, 1, 0),  # an update that kept its stamp, lost
    (1, 2, 0, 0, 1),  # a version held twice
    (1, 2, 1, 0, 1),  # held twice beside its quarantine record
    (0, 1, 0, 0, 1),  # a fact row nothing landed
    (0, 0, 1, 0, 1),  # a quarantine record of a version nothing landed
    (3, 1, 2, 0, 0),  # two quarantined versions of one stamp, then its fix (defect 16)
    (2, 0, 2, 0, 0),  # two versions of one stamp parked, each its own record (defect 16)
    (3, 1, 1, 1, 0),  # two quarantined versions of one stamp collapsed into one record (defect 16)
])
def test_each_landed_value_version_is_a_fact_row_or_the_one_quarantined(
        landed, facts, records, missing, extra):
    found = version_differences(Counter({V: landed}), Counter({V: facts}), Counter({V: records}))
    assert found == ([V] * missing, [V] * extra)
