"""``make soak SOAK_MINUTES=N``: fresh random histories for N minutes, then their counts.

    venv/bin/python -m tests.model.soak --minutes 30          # fresh seeds until the time is up
    venv/bin/python -m tests.model.soak --seed S --examples K  # replay one seed (printed on a failure)

Starts its own throwaway PostgreSQL cluster (removed at exit). Prints one line per seed and, at the end,
histories, rules, runs, kills and mismatches; exits 1 when any history failed (the failing seeds and the
commands that replay them are printed, with each shrunk history).
"""
import argparse
import os
import random
import signal
import sys
import time
import traceback

os.environ.setdefault("TOTESYS_DAEMON", "off")

EXAMPLES_PER_FRESH_SEED = 5


def fresh_seeds(deadline):
    """Random seeds until ``deadline`` (time.monotonic)."""
    while time.monotonic() < deadline:
        yield random.SystemRandom().randrange(2 ** 32)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.model.soak")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--examples", type=int, default=EXAMPLES_PER_FRESH_SEED)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-shrink", action="store_true", help="report a failing history as it ran")
    args = parser.parse_args(argv)
    from tests.model import harness, profile
    from tests.model.machine import STATS
    from totesys_local.cluster import temporary_cluster
    steps = args.steps or profile.STEPS
    cluster = temporary_cluster()

    def stop(*_):
        # kill <pid>: Hypothesis would report an exception raised here as a flaky test and go on, so the
        # throwaway cluster is removed and the process ends at once.
        cluster.destroy()
        os._exit(143)
    signal.signal(signal.SIGTERM, stop)
    failures = []
    started = time.monotonic()
    try:
        account = harness.kept_account()
        account.__enter__()
        profile.prepare(cluster.url())
        if args.seed is not None:
            seeds = iter([args.seed])
        else:
            minutes = args.minutes if args.minutes is not None else 1.0
            deadline = started + minutes * 60
            seeds = fresh_seeds(deadline)
        for seed in seeds:
            before = STATS.histories
            try:
                profile.run_seed(seed, args.examples, steps, shrink=not args.no_shrink)
                verdict = "ok"
            except Exception:  # noqa: BLE001 - every failing seed is reported, the soak goes on
                traceback.print_exc()
                failures.append(seed)
                verdict = "FAILED"
            print(f"seed {seed}: {STATS.histories - before} histories {verdict} "
                  f"({time.monotonic() - started:.0f} s) | {STATS.line()}", flush=True)
    finally:
        account.__exit__(None, None, None)
        cluster.destroy()
    print(f"\nsoak: {time.monotonic() - started:.0f} s, {STATS.line()}\nrules: {STATS.rule_line()}")
    for seed in failures:
        print(f"failing seed {seed}: {profile.replay_command(seed, args.examples, steps)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
