"""Running the random histories: one Hypothesis seed at a time, with the settings every size shares.

``run_seed(seed, examples)`` runs ``examples`` histories (of at most STEPS rules each, plus the final
run) from ``seed``; the same seed and examples give the same histories, so a failure is replayed with
``replay_command(seed, examples)``. On a failure Hypothesis shrinks the history and prints it as the
list of rule calls (the regression test's body).
"""
import sys

from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.model.machine import ON_BY_DEFAULT, Environment, PipelineHistory, ingest_modes, switched_on

STEPS = 14
# The bounded profile's fixed seeds (each runs EXAMPLES_PER_SEED histories), then fresh ones.
FIXED_SEEDS = (1, 2, 3)
EXAMPLES_PER_SEED = 4


def history_settings(examples, steps=STEPS, shrink=True):
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]
    return settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                    phases=phases, suppress_health_check=list(HealthCheck), print_blob=True,
                    verbosity=Verbosity.normal, report_multiple_bugs=False)


def replay_command(seed, examples, steps=STEPS):
    switches = " ".join(f"{name}={int(switched_on(name))}" for name in
                        ("MODEL_BACKDATED", "MODEL_FUTURE", "MODEL_LOCAL_SAVE_KILLS", "MODEL_CLOCK")
                        if switched_on(name) != (name in ON_BY_DEFAULT))
    modes = ingest_modes()
    if modes != ("cursor",):
        switches = f"{switches} MODEL_INGEST_MODE={'both' if len(modes) > 1 else modes[0]}".strip()
    return (f"{switches + ' ' if switches else ''}venv/bin/python -m tests.model.soak --seed {seed} "
            f"--examples {examples} --steps {steps}")


def run_seed(seed, examples, steps=STEPS, shrink=True):
    """Run ``examples`` histories from ``seed``; raise (after shrinking) on the first failing one."""
    def factory():
        return PipelineHistory()
    factory._hypothesis_internal_use_seed = seed
    try:
        run_state_machine_as_test(factory, settings=history_settings(examples, steps, shrink))
    except BaseException:
        print(f"\nFAILING SEED {seed}: replay with\n  {replay_command(seed, examples, steps)}\n",
              file=sys.stderr, flush=True)
        raise


def prepare(admin_url):
    """Make the two template databases on the server at ``admin_url`` (once per process)."""
    from tests.model.source import make_source_template, make_warehouse_template
    Environment.admin_url = admin_url
    Environment.source_template = make_source_template(admin_url)
    Environment.warehouse_template = make_warehouse_template(admin_url)
