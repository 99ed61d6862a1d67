"""The local emulator: imports everything once, warms moto up, keeps one emulated account with the
pipeline deployed, and serves `totesys run|retry` requests ONE AT A TIME over the state folder's socket.

Each request runs exactly what `totesys run` runs in-process (``cli.run_in_process``), in a child forked
from the warm emulator (so what a run allocates is given back when it ends: the emulator idles at its warm
size), with the client's environment and working folder applied and its stdout/stderr sent to the client
line by line; a client that goes away (Ctrl-C) does not stop the run, which finishes and saves the buckets. A
second client while a run is served is told "another totesys run is using ..." at once, as the run lock
tells a second in-process run. The emulator stops after ``TOTESYS_DAEMON_IDLE_SECONDS`` (900) without a
request, on SIGTERM (after the run it serves), when a client's code fingerprint differs from its own, or
when its state folder is deleted or replaced (checked every TICK between requests).
"""
import contextlib
import fcntl
import io
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from totesys_local.daemon.protocol import (LOCK_NAME, PID_NAME, DaemonError, code_fingerprint, idle_seconds,
                                           receive, send, socket_path, state_folder)

LOCK_WAIT = 30  # seconds a new emulator waits for the one it replaces to exit
REQUEST_TIMEOUT = 10  # seconds a connected client has to send its request
SEND_TIMEOUT = 30  # seconds a stalled client may block the output before it is dropped
TICK = 0.25  # how often the loops look at the stop flag


def log(message: str) -> None:
    """One line of the emulator's own log (its stderr: ``<state-dir>/daemon.log``)."""
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: {message}", file=sys.__stderr__,
          flush=True)


class Channel:
    """The connection of one request. Sending never fails: a client that went away is only noted."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.lock = threading.RLock()
        self.gone = False

    def send(self, **message: object) -> None:
        with self.lock:
            if self.gone:
                return
            try:
                send(self.conn, **message)
            except OSError:  # Ctrl-C on the client, or it stalled: the run goes on without it
                self.gone = True
                log("client went away; the run goes on")


class ClientStream(io.TextIOBase):
    """sys.stdout or sys.stderr during a request: each complete line goes to the client as it is
    written (progress lines appear live); ``flush`` also sends a partial line."""

    def __init__(self, channel: Channel, kind: str) -> None:
        super().__init__()
        self.channel, self.kind, self.pending = channel, kind, ""

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase declares it an attribute
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.channel.lock:
            self.pending += text
            if "\n" in self.pending:
                lines, _, self.pending = self.pending.rpartition("\n")
                self.channel.send(**{self.kind: lines + "\n"})
        return len(text)

    def flush(self) -> None:
        with self.channel.lock:
            if self.pending:
                self.channel.send(**{self.kind: self.pending})
                self.pending = ""


def _replace_environment(values: Mapping[str, str]) -> None:
    os.environ.clear()
    os.environ.update(values)
    time.tzset()  # TZ may differ between the client and the emulator


def _exit_status(code: Union[str, int, None]) -> int:
    """sys.exit's argument as a process's exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


class Emulator:
    """The serving half: an accept thread answers every connection at once (greeting, busy) and queues
    a request only when none is being served; the main thread runs the queued request."""

    def __init__(self, listener: socket.socket, fingerprint: str, idle: float,
                 run_command: Callable[[List[str]], int], on_restart: Callable[[], None] = lambda: None,
                 folder_present: Callable[[], bool] = lambda: True, isolate: bool = False) -> None:
        self.listener = listener
        self.isolate = isolate
        self.folder_present = folder_present
        self.on_restart = on_restart
        self.fingerprint = fingerprint
        self.idle = idle
        self.run_command = run_command
        self.requests: "queue.Queue[Tuple[socket.socket, Dict[str, Any]]]" = queue.Queue()
        self.busy = threading.Lock()
        self.held = False  # the main thread holds ``busy`` for the request it serves (main thread only)
        self.stopping = threading.Event()

    def stop(self, *_: object) -> None:
        """Stop after the run being served (the SIGTERM handler)."""
        self.stopping.set()

    def serve(self) -> None:
        accepting = threading.Thread(target=self._accept, name="accept", daemon=True)
        accepting.start()
        last = time.monotonic()
        while not self.stopping.is_set():
            try:
                conn, request = self.requests.get(timeout=TICK)
            except queue.Empty:
                if time.monotonic() - last >= self.idle:
                    log(f"no request for {self.idle:g} s: stopping")
                    break
                if not self.folder_present():
                    log("the state folder was deleted (or replaced): stopping")
                    break
                continue
            try:
                self.held = True
                self._handle(conn, request)
            finally:
                conn.close()
                self._free()
                last = time.monotonic()
        self.stopping.set()
        self.listener.close()
        accepting.join()
        while not self.requests.empty():  # accepted as we stopped: the client starts a fresh emulator
            conn, _ = self.requests.get()
            with contextlib.suppress(OSError):
                send(conn, restart="stopping")
            conn.close()

    def _free(self) -> None:
        """Let the accept thread take the next request (once per request)."""
        if self.held:
            self.held = False
            self.busy.release()

    def _accept(self) -> None:
        self.listener.settimeout(TICK)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                conn.settimeout(REQUEST_TIMEOUT)
                send(conn, pid=os.getpid())
                with conn.makefile("rb") as stream:
                    request = receive(stream)
            except (OSError, ValueError):
                request = None
            if request is None or request.get("ping"):
                conn.close()
            elif self.stopping.is_set() or not self.busy.acquire(blocking=False):
                with contextlib.suppress(OSError):
                    send(conn, **({"restart": "stopping"} if self.stopping.is_set() else {"busy": True}))
                conn.close()
            else:
                self.requests.put((conn, request))

    def _handle(self, conn: socket.socket, request: Mapping[str, Any]) -> None:
        conn.settimeout(SEND_TIMEOUT)
        channel = Channel(conn)
        if request.get("fingerprint") != self.fingerprint:
            log("the code on disk changed: stopping so that the client starts a fresh emulator")
            self.stopping.set()
            self.on_restart()  # the socket goes now: the client's fresh emulator takes its place
            channel.send(restart="the code on disk changed")
            return
        argv = request["argv"]
        log(f"serving totesys {' '.join(argv[:1])}")
        started = time.monotonic()
        status = self._in_child(channel, request) if self.isolate else self._run(channel, request)
        # Free before the exit status goes out: the client may send its next run at once (`retry` after a
        # failed run), and it must find this emulator free, not busy.
        self._free()
        channel.send(exit=status)
        log(f"done: exit status {status} in {time.monotonic() - started:.2f} s")

    def _in_child(self, channel: Channel, request: Mapping[str, Any]) -> int:
        """Run the request in a forked child and return its exit status. The child starts warm (a copy
        of this process: imports, moto, the deployed pipeline) and everything the execution allocates
        (Arrow tables, moto's objects, the parsed history) goes back to the system when it exits: the
        emulator stays at its warm size between runs (issue 24). The child writes the output to the
        client itself; the emulator, once the child is gone, sends the exit status."""
        pid = os.fork()
        if pid == 0:  # the child: run, then leave at once, without this process's clean-up
            status = 1
            try:
                status = self._run(channel, request)
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(wait_status)
        if status < 0:
            channel.send(err=f"totesys: the run's process ended on signal {-status}; whatever the execution "
                             "saved is kept: run again to go on\n")
            return 1
        return status

    def _run(self, channel: Channel, request: Mapping[str, Any]) -> int:
        """Run the request in this process; its exit status."""
        argv = request["argv"]
        saved_environment, saved_folder = dict(os.environ), os.getcwd()
        out, err = ClientStream(channel, "out"), ClientStream(channel, "err")
        status = 1
        try:
            _replace_environment(request["env"])
            os.chdir(request["cwd"])
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    status = self.run_command(argv)
                except SystemExit as exit_:
                    status = _exit_status(exit_.code)
                finally:
                    out.flush()
                    err.flush()
        except OSError as error:  # the client's folder is gone
            channel.send(err=f"totesys: cannot use the folder {request['cwd']}: {error}\n")
        finally:
            _replace_environment(saved_environment)
            os.chdir(saved_folder)
        return status


def _lock(state: Path) -> Optional[IO[str]]:
    """Hold ``daemon.lock`` for the process's life: one emulator per state folder. Waits for an
    emulator that is stopping (a restart) to exit; returns None when another one serves."""
    handle = open(state / LOCK_NAME, "w")
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                return None
            time.sleep(0.05)


def _listen(path: Path) -> socket.socket:
    """A socket listening on ``path`` (mode 0600), replacing a stale one (we hold the lock)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(umask)
    os.chmod(path, 0o600)
    listener.listen(16)
    return listener


def warm_up() -> Tuple[ModuleType, Dict[str, Callable[..., Any]]]:
    """Import everything a run needs and run one execution of the real definition with stand-in
    handlers in a throwaway account: moto's ASL parser, its JSONPath and intrinsic-function parsers,
    boto3's service models and the handlers' imports are then warm. Returns (cli, the real handlers)."""
    from totesys_local import cli, runner
    from totesys_local.aws_emulation import deploy_pipeline, emulated_aws, wait_for_execution
    import boto3
    handlers = runner.stage_handlers("totesys")
    stand_ins = dict.fromkeys(handlers, lambda event, context: {"rejected_rows": 0})
    with runner.applied_environment(runner.local_account_environment()), emulated_aws(stand_ins):
        arns = deploy_pipeline("totesys")
        sfn = boto3.client("stepfunctions")
        execution = sfn.start_execution(stateMachineArn=arns["state_machine_arn"], input="{}")
        result = wait_for_execution(execution["executionArn"], on_event=lambda event: None, timeout=120)
        _warm_first_calls(boto3)
    if result["status"] != "SUCCEEDED":
        raise DaemonError(f"the warm-up execution ended {result['status']}: {result.get('cause')}")
    return cli, handlers


def _warm_first_calls(boto3: ModuleType) -> None:
    """What a run's first call pays once per process, paid here: each run is a fork of this process
    (``Emulator._in_child``), so what is cached here is cached for every run, and what is not is paid by
    every run. The handlers' SDK check (a new botocore session: ~1 s on a busy machine) and the clients'
    service models."""
    from utils.aws.sdk import sdk_problem
    sdk_problem()
    for service in ("s3", "secretsmanager", "sns", "stepfunctions", "logs", "cloudwatch"):
        boto3.client(service)


def release_unused_memory() -> None:
    """Give back what the warm-up held and no run uses: moto's EC2 instance catalogue (~55 MB of parsed
    JSON, loaded because the Step Functions parser imports its Batch integration; the pipeline has no
    EC2), then the freed heap (glibc's malloc_trim, where there is one); then freezes what is left out of
    the garbage collector's sight. Runs in forked children start from it, and the emulator idles at
    that size."""
    import gc
    with contextlib.suppress(ImportError, AttributeError):
        from moto.ec2.models import instance_types
        instance_types.INSTANCE_TYPES.clear()
        instance_types.INSTANCE_TYPE_OFFERINGS.clear()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    # The warm objects to the permanent generation: a child's garbage collections then do not walk
    # (and so copy, page by page) everything the emulator holds.
    gc.freeze()


def serve(state_dir: Union[str, Path], ready: Callable[[str], None]) -> int:
    """The emulator's life. ``ready(line)`` is called once: "ready <pid>" when it serves (or when another
    emulator already serves this folder), "failed: <reason>" when it cannot start. Returns the exit status."""
    state = state_folder(state_dir)
    try:
        lock = _lock(state)
        if lock is None:
            from totesys_local.daemon.client import running_pid
            other = running_pid(state)
            ready(f"ready {other}" if other else f"failed: {state / LOCK_NAME} is held by a process that "
                  "is not a running emulator")
            return 0 if other else 1
        fingerprint = code_fingerprint()  # before the imports: a file changed meanwhile means restart
        started = time.monotonic()
        cli, handlers = warm_up()
        release_unused_memory()
        from totesys_local.aws_emulation import kept_pipeline
        from totesys_local.runner import applied_environment, local_account_environment
        path = socket_path(state)
        with lock, applied_environment(local_account_environment()), kept_pipeline(handlers, "totesys"):
            listener = _listen(path)
            listening = os.stat(path).st_ino
            (state / PID_NAME).write_text(f"{os.getpid()}\n")
            emulator = Emulator(listener, fingerprint, idle_seconds(),
                                lambda argv: cli.run_in_process(cli.build_parser().parse_args(argv)),
                                on_restart=lambda: _remove_own_files(state, path, listening),
                                folder_present=_same_folder(state), isolate=True)
            for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(number, emulator.stop)
            log(f"serving {state} on {path} (ready in {time.monotonic() - started:.1f} s)")
            ready(f"ready {os.getpid()}")
            try:
                emulator.serve()
            finally:
                _remove_own_files(state, path, listening)
        log("stopped")
        return 0
    except BaseException as err:  # noqa: BLE001 - said once to the starting client, then logged
        log("failed:\n" + traceback.format_exc())
        ready(f"failed: {type(err).__name__}: {err}")
        return 1


def _same_folder(state: Path) -> Callable[[], bool]:
    """A check that ``state`` is still the folder this emulator was started for: not deleted, not
    replaced by a new folder of the same name (whose own emulator a client would start)."""
    identity = _identity(state)
    return lambda: _identity(state) == identity


def _identity(folder: Path) -> Optional[Tuple[int, int]]:
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _remove_own_files(state: Path, path: Path, inode: int) -> None:
    """Remove the socket and the pid file, unless a newer emulator has already replaced them."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            path.unlink()
    with contextlib.suppress(OSError, ValueError):
        if int((state / PID_NAME).read_text()) == os.getpid():
            (state / PID_NAME).unlink()
