"""The ``totesys`` command: seed and simulate totesys data, run the pipeline locally.

    totesys seed --target URL --scale N [--seed S]
    totesys simulate [--target URL] --minutes M [--seed S] [--cancel N] [--state-dir DIR]
    totesys run [--source URL] [--warehouse URL] [--state-dir DIR] [--repoint]
    totesys pending [--source URL] [--warehouse URL] [--state-dir DIR]
    totesys retry [--source URL] [--warehouse URL] [--state-dir DIR] [--repoint]
    totesys psql | stop [--state-dir DIR]
    totesys dashboard [--warehouse URL] [--port N] [--state-dir DIR]
    totesys verify [--source URL] [--warehouse URL] [--json] [--state-dir DIR]
    totesys resync --tables T [T ...] [--source URL] [--warehouse URL] [--state-dir DIR]
    totesys deletes [--approve TABLE ...] [--source URL] [--warehouse URL] [--state-dir DIR]
    totesys rebuild --into URL [--tables T ...] [--warehouse URL] [--resume GENERATION] [--state-dir DIR]
    totesys cdc status|drop-slot [--source URL] [--slot NAME] [--state-dir DIR]

URLs may also come from TOTESYS_SOURCE_URL / TOTESYS_WAREHOUSE_URL (the flags win); a URL without a
password gets it as libpq tools do (PGPASSWORD, then ~/.pgpass or PGPASSFILE, else none).
Every failure is one clear line on stderr and a non-zero exit status.

``run`` and ``retry`` go through the state folder's local emulator (``totesys_local.daemon``: started on
first use, stopped after 15 min idle or by ``stop``); ``TOTESYS_DAEMON=off`` runs them in this process.
This module imports only the standard library until a command needs more: it is the emulator's client.
"""
import argparse
import os
import sys
from typing import Optional, Sequence, TypeAlias

# Packages of requirements-dev.txt that some commands import: after `make install-requirements`
# (runtime only) they are missing, and the command says what to install instead of a traceback.
DEV_PACKAGES = {"moto", "flask", "werkzeug", "pgserver"}
RUNNER_COMMANDS = ("run", "retry", "pending", "psql", "stop")
EMULATOR_COMMANDS = ("run", "retry")
# What ``add_subparsers`` returns: each ``_add_*`` adds its subcommands to it.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", default=".local", help="where local buckets and state persist")


def _add_seed(commands: Commands) -> None:
    seed = commands.add_parser("seed", help="create the totesys schema in an empty database and fill it")
    seed.add_argument("--target", required=True, help="postgresql://user:pass@host:port/db")
    seed.add_argument("--scale", type=_positive_float, default=1.0,
                      help="multiplier of the order-like tables (1 = the real database's size)")
    seed.add_argument("--seed", type=int, default=42, help="random seed: same seed, same data")


def _add_simulate(commands: Commands) -> None:
    simulate = commands.add_parser("simulate", help="apply M minutes of business activity, now")
    simulate.add_argument("--target", help="postgresql://user:pass@host:port/db (default: "
                          "TOTESYS_SOURCE_URL, else the embedded totesys of --state-dir, "
                          "as `make run` made it)")
    simulate.add_argument("--minutes", type=_positive_float, required=True)
    simulate.add_argument("--seed", type=int, default=None)
    simulate.add_argument("--cancel", type=int, default=0, metavar="N",
                          help="also cancel N unpaid sales orders: delete each with its transaction and "
                               "payment (the pipeline records hard deletes in etl_deleted_rows)")
    _state_dir(simulate)


def _add_runner_commands(commands: Commands) -> None:
    for name, text in (("run", "run the pipeline once through the state machine, locally"),
                       ("retry", "run the pipeline again after a failure, saying what was pending")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--source", help="totesys database URL (default: TOTESYS_SOURCE_URL, "
                         "else the embedded cluster)")
        sub.add_argument("--warehouse", help="warehouse database URL (default: TOTESYS_WAREHOUSE_URL, "
                         "else the embedded cluster)")
        sub.add_argument("--repoint", action="store_true",
                         help="point the state folder at this run's databases deliberately (it records "
                              "its source and warehouse on the first run and refuses any other)")
        _state_dir(sub)
    pending = commands.add_parser("pending", help="list the batches waiting to be transformed or loaded, "
                                  "the rows waiting in totesys, the warehouse's progress and the last error")
    pending.add_argument("--source", help="totesys database whose waiting rows to count (default: "
                         "TOTESYS_SOURCE_URL, else the embedded cluster when no URL is given)")
    pending.add_argument("--warehouse", help="warehouse whose ledger to check (default: "
                         "TOTESYS_WAREHOUSE_URL, else the embedded cluster)")
    _state_dir(pending)
    for name, text in (("psql", "open psql on the embedded warehouse"),
                       ("stop", "stop the local emulator and the embedded PostgreSQL cluster")):
        _state_dir(commands.add_parser(name, help=text))


def _add_dashboard(commands: Commands) -> None:
    dashboard = commands.add_parser("dashboard", help="serve the sales and pipeline dashboard on 127.0.0.1")
    dashboard.add_argument("--warehouse", help="warehouse database URL (default: TOTESYS_WAREHOUSE_URL, "
                           "else the embedded warehouse of --state-dir, as `make run` made it)")
    dashboard.add_argument("--port", type=int, default=8501, help="port on 127.0.0.1 (default 8501)")
    _state_dir(dashboard)


def _add_trust(commands: Commands) -> None:
    verify = commands.add_parser("verify", help="compare totesys with the warehouse (exit 0 all matched, "
                                 "1 any mismatch, 2 cannot run)")
    verify.add_argument("--source", help="totesys database URL (default: TOTESYS_SOURCE_URL, else the "
                        "embedded one)")
    verify.add_argument("--warehouse", help="warehouse database URL (default: TOTESYS_WAREHOUSE_URL, "
                        "else the embedded one)")
    verify.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    _state_dir(verify)
    resync = commands.add_parser("resync", help="land the full current state of source tables as one batch "
                                 "and run the pipeline (repairs what verify reports)")
    resync.add_argument("--tables", nargs="+", required=True, metavar="T", help="source table names")
    deletes = commands.add_parser("deletes", help="list the deletions the mass-delete guard holds; "
                                  "--approve records them (runs the pipeline)")
    deletes.add_argument("--approve", nargs="+", metavar="TABLE", help="source tables whose held deletions "
                         "to record")
    rebuild = commands.add_parser("rebuild", help="re-derive the whole warehouse from the landing zone alone "
                                  "into an empty database (totesys is not read)")
    rebuild.add_argument("--into", required=True, help="URL of the empty (or new) database to build")
    rebuild.add_argument("--resume", metavar="GENERATION",
                         help="continue a rebuild that stopped (its generation)")
    rebuild.add_argument("--tables", nargs="+", metavar="T", help="then replace these warehouse tables of "
                         "the warehouse in place by their rebuilt contents (--into is the scratch database)")
    rebuild.add_argument("--warehouse", help="with --tables: the warehouse to repair (default: "
                         "TOTESYS_WAREHOUSE_URL, else the embedded one)")
    _state_dir(rebuild)
    for sub in (resync, deletes):
        sub.add_argument("--source", help="totesys database URL (default: TOTESYS_SOURCE_URL, else the "
                         "embedded one)")
        sub.add_argument("--warehouse", help="warehouse database URL (default: TOTESYS_WAREHOUSE_URL, else "
                         "the embedded one)")
        _state_dir(sub)


def _add_cdc(commands: Commands) -> None:
    cdc = commands.add_parser("cdc", help="the CDC replication slot on totesys (INGEST_MODE=cdc): "
                              "status, or drop-slot (teardown)")
    cdc.add_argument("action", choices=("status", "drop-slot"))
    cdc.add_argument("--source", help="totesys database URL (default: TOTESYS_SOURCE_URL, else the "
                     "embedded one)")
    cdc.add_argument("--slot", help="slot name (default: CDC_SLOT_NAME, else totesys_cdc)")
    _state_dir(cdc)


# One function per group of subcommands: a new command is one more function in this list.
SUBCOMMANDS = [_add_seed, _add_simulate, _add_runner_commands, _add_dashboard, _add_trust, _add_cdc]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="totesys", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def _seed(args: argparse.Namespace) -> int:
    from totesys_local.generator import seed
    counts = seed(args.target, scale=args.scale, seed=args.seed)
    print("seeded totesys: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from totesys_local.generator import simulate
    target = args.target or os.environ.get("TOTESYS_SOURCE_URL")
    if not target:
        from totesys_local.runner import embedded_source_url
        target = embedded_source_url(args.state_dir)
    summary = simulate(target, minutes=args.minutes, seed=args.seed, cancel=args.cancel)
    print("simulated: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def _runner(args: argparse.Namespace) -> int:
    from totesys_local import runner
    return runner.main(args)


def _dashboard(args: argparse.Namespace) -> int:
    from totesys_local.dashboard.server import serve
    serve(args.warehouse, args.port, args.state_dir)
    return 0


def _cdc(args: argparse.Namespace) -> int:
    from totesys_local.cdc_cli import command_cdc
    return command_cdc(args)


def _trust(args: argparse.Namespace) -> int:
    from totesys_local import trust
    return trust.COMMANDS[args.command](args)


HANDLERS = {"seed": _seed, "simulate": _simulate, "dashboard": _dashboard, "cdc": _cdc,
            **{name: _trust for name in ("verify", "resync", "deletes", "rebuild")},
            **{name: _runner for name in RUNNER_COMMANDS}}


def missing_dependency_message(command: str, err: ModuleNotFoundError) -> str:
    """The one line shown when ``command`` cannot import a package (``err``: ModuleNotFoundError)."""
    package = (err.name or "").split(".")[0]
    if package in DEV_PACKAGES:
        return (f"totesys {command} needs {package}, a development dependency: run `make install-dev-tools` "
                "(or `venv/bin/pip install -r requirements-dev.txt`)")
    return (f"totesys {command} needs the Python package {package or err}, which is not installed: "
            "run `make install-requirements` (or `venv/bin/pip install -r requirements.txt`)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command in EMULATOR_COMMANDS:
        from totesys_local.daemon import client
        if client.enabled():
            status = client.run(argv, args.command, args.state_dir)
            if status is not None:
                return status
    return run_in_process(args)


def run_in_process(args: argparse.Namespace) -> int:
    """Run the parsed command here (what the local emulator runs for each request); the exit status."""
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print("totesys: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:
        print(missing_dependency_message(args.command, err), file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        print(f"totesys {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
