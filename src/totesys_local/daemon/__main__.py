"""``python -m totesys_local.daemon --state-dir DIR``: start the local emulator of DIR, detached.

Prints one line once the emulator serves, "ready <pid>", or could not start, "failed: <reason>", and
exits (0 or 1); the emulator runs on in a forked child of its own session, with stdin from /dev/null and
stdout/stderr appended to ``DIR/daemon.log`` (its pid in ``DIR/daemon.pid``). The client
(``totesys_local.daemon.client.start``) runs this and reads the line.
"""
import argparse
import contextlib
import os
import sys
from typing import Optional, Sequence
from pathlib import Path

from totesys_local.daemon.protocol import LOG_NAME


def _detach(log_path: Path) -> None:
    """Become the emulator's process: a session of its own, no terminal, output to the log."""
    with contextlib.suppress(OSError):
        os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m totesys_local.daemon",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True)
    state = Path(parser.parse_args(argv).state_dir)
    state.mkdir(parents=True, exist_ok=True)
    answers, pipe_end = os.pipe()
    answer: Optional[int] = pipe_end
    if os.fork():  # the starter: relay the emulator's first word, then leave it running
        os.close(pipe_end)
        with os.fdopen(answers) as stream:
            line = stream.read().strip()
        print(line or "failed: the local emulator exited while starting", flush=True)
        return 0 if line.startswith("ready ") else 1
    os.close(answers)
    _detach(state / LOG_NAME)

    def ready(line: str) -> None:
        nonlocal answer
        if answer is not None:
            os.write(answer, (line + "\n").encode())
            os.close(answer)
            answer = None

    from totesys_local.daemon.server import serve
    return serve(state, ready)


if __name__ == "__main__":
    sys.exit(main())
