"""The bounded profile of the model-based random test (issue 21): the fixed seeds, then fresh seeds until
at least MIN_HISTORIES histories and MIN_RULES rules have run, each history checked against the model
after every run (tests/model/machine.py, oracle.py). No shrinking here: a failure prints its seed and
the command that replays (and shrinks) it; ``make soak`` runs fresh seeds for longer.
"""
import random

import pytest

from tests.model import profile
from tests.model.machine import STATS

pytestmark = pytest.mark.slow

MIN_HISTORIES = 18
MIN_RULES = 215
FRESH_EXAMPLES = 3


def test_random_histories_agree_with_the_model(model_environment, capsys):
    start_histories, start_rules = STATS.histories, STATS.rules
    for seed in profile.FIXED_SEEDS:
        profile.run_seed(seed, profile.EXAMPLES_PER_SEED, shrink=False)
    while STATS.histories - start_histories < MIN_HISTORIES or STATS.rules - start_rules < MIN_RULES:
        profile.run_seed(random.SystemRandom().randrange(2 ** 32), FRESH_EXAMPLES, shrink=False)
    with capsys.disabled():
        print(f"\nmodel histories: {STATS.line()}\nrules: {STATS.rule_line()}")
    assert STATS.kills > 0 and STATS.runs > STATS.histories
