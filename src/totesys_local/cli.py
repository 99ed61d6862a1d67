"""The ``totesys`` command: seed and simulate totesys data, run the pipeline locally.

    totesys seed --target URL --scale N [--seed S]
    totesys simulate --target URL --minutes M [--seed S]
    totesys run [--source URL] [--warehouse URL] [--state-dir DIR]
    totesys psql | stop [--state-dir DIR]
    totesys dashboard [--warehouse URL] [--port N] [--state-dir DIR]

Every failure is one clear line on stderr and a non-zero exit status.
"""
import argparse
import sys


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="totesys", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    seed = commands.add_parser("seed", help="create the totesys schema in an empty database and fill it")
    seed.add_argument("--target", required=True, help="postgresql://user:pass@host:port/db")
    seed.add_argument("--scale", type=_positive_float, default=1.0,
                      help="multiplier of the order-like tables (1 = the real database's size)")
    seed.add_argument("--seed", type=int, default=42, help="random seed: same seed, same data")

    simulate = commands.add_parser("simulate", help="apply M minutes of business activity, now")
    simulate.add_argument("--target", help="postgresql://user:pass@host:port/db "
                          "(default: the embedded totesys of --state-dir, as `make run` made it)")
    simulate.add_argument("--minutes", type=_positive_float, required=True)
    simulate.add_argument("--seed", type=int, default=None)
    simulate.add_argument("--state-dir", default=".local")

    run = commands.add_parser("run", help="run the pipeline once through the state machine, locally")
    run.add_argument("--source", help="totesys database URL (default: the embedded cluster)")
    run.add_argument("--warehouse", help="warehouse database URL (default: the embedded cluster)")
    run.add_argument("--state-dir", default=".local", help="where local buckets and state persist")

    for name, text in (("psql", "open psql on the embedded warehouse"),
                       ("stop", "stop the embedded PostgreSQL cluster")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--state-dir", default=".local")
    dashboard = commands.add_parser("dashboard", help="serve the sales and pipeline dashboard on 127.0.0.1")
    dashboard.add_argument("--warehouse", help="warehouse database URL (default: TOTESYS_WAREHOUSE_URL, "
                           "else the embedded warehouse of --state-dir, as `make run` made it)")
    dashboard.add_argument("--port", type=int, default=8501, help="port on 127.0.0.1 (default 8501)")
    dashboard.add_argument("--state-dir", default=".local")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "seed":
            from totesys_local.generator import seed
            counts = seed(args.target, scale=args.scale, seed=args.seed)
            print("seeded totesys: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        elif args.command == "simulate":
            from totesys_local.generator import simulate
            target = args.target
            if target is None:
                from totesys_local.runner import embedded_source_url
                target = embedded_source_url(args.state_dir)
            summary = simulate(target, minutes=args.minutes, seed=args.seed)
            print("simulated: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
        elif args.command == "dashboard":
            from totesys_local.dashboard.server import serve
            return serve(args.warehouse, args.port, args.state_dir)
        else:
            from totesys_local import runner
            return runner.main(args)
    except KeyboardInterrupt:
        print("totesys: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        print(f"totesys {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
