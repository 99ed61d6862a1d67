"""The local emulator: imports everything once, warms moto up, keeps one emulated account with the
pipeline deployed, and serves `totesys run|retry` requests ONE AT A TIME over the state folder's socket.

Each request runs exactly what `totesys run` runs in-process (``cli.run_in_process``), with the client's
environment and working folder applied for its duration and its stdout/stderr sent to the client line by
line; a client that goes away (Ctrl-C) does not stop the run, which finishes and saves the buckets. A
second client while a run is served is told "another totesys run is using ..." at once, as the run lock
tells a second in-process run. The emulator stops after ``TOTESYS_DAEMON_IDLE_SECONDS`` (900) without a
request, on SIGTERM (after the run it serves), or when a client's code fingerprint differs from its own.
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

from totesys_local.daemon.protocol import (LOCK_NAME, PID_NAME, DaemonError, code_fingerprint, idle_seconds,
                                           receive, send, socket_path, state_folder)

LOCK_WAIT = 30  # seconds a new emulator waits for the one it replaces to exit
REQUEST_TIMEOUT = 10  # seconds a connected client has to send its request
SEND_TIMEOUT = 30  # seconds a stalled client may block the output before it is dropped
TICK = 0.25  # how often the loops look at the stop flag


def log(message):
    """One line of the emulator's own log (its stderr: ``<state-dir>/daemon.log``)."""
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: {message}", file=sys.__stderr__,
          flush=True)


class Channel:
    """The connection of one request. Sending never fails: a client that went away is only noted."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.RLock()
        self.gone = False

    def send(self, **message):
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

    def __init__(self, channel, kind):
        super().__init__()
        self.channel, self.kind, self.pending = channel, kind, ""

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def write(self, text):
        with self.channel.lock:
            self.pending += text
            if "\n" in self.pending:
                lines, _, self.pending = self.pending.rpartition("\n")
                self.channel.send(**{self.kind: lines + "\n"})
        return len(text)

    def flush(self):
        with self.channel.lock:
            if self.pending:
                self.channel.send(**{self.kind: self.pending})
                self.pending = ""


def _replace_environment(values):
    os.environ.clear()
    os.environ.update(values)
    time.tzset()  # TZ may differ between the client and the emulator


def _exit_status(code):
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

    def __init__(self, listener, fingerprint, idle, run_command, on_restart=lambda: None):
        self.listener = listener
        self.on_restart = on_restart
        self.fingerprint = fingerprint
        self.idle = idle
        self.run_command = run_command
        self.requests = queue.Queue()
        self.busy = threading.Lock()
        self.stopping = threading.Event()

    def stop(self, *_):
        """Stop after the run being served (the SIGTERM handler)."""
        self.stopping.set()

    def serve(self):
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
                continue
            try:
                self._handle(conn, request)
            finally:
                conn.close()
                self.busy.release()
                last = time.monotonic()
        self.stopping.set()
        self.listener.close()
        accepting.join()
        while not self.requests.empty():  # accepted as we stopped: the client starts a fresh emulator
            conn, _ = self.requests.get()
            with contextlib.suppress(OSError):
                send(conn, restart="stopping")
            conn.close()

    def _accept(self):
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

    def _handle(self, conn, request):
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
        channel.send(exit=status)
        log(f"done: exit status {status} in {time.monotonic() - started:.2f} s")


def _lock(state):
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


def _listen(path):
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


def warm_up():
    """Import everything a run needs and run one execution of the real definition with stand-in
    handlers in a throwaway account: moto's ASL parser, its JSONPath and intrinsic-function parsers,
    boto3's service models and the handlers' imports are then warm. Returns (cli, the real handlers)."""
    from totesys_local import cli, runner
    from totesys_local.aws_emulation import deploy_pipeline, emulated_aws, wait_for_execution
    import boto3
    handlers = runner._handlers("totesys")
    stand_ins = dict.fromkeys(handlers, lambda event, context: {"rejected_rows": 0})
    with runner._environment(runner.local_account_environment()), emulated_aws(stand_ins):
        arns = deploy_pipeline("totesys")
        sfn = boto3.client("stepfunctions")
        execution = sfn.start_execution(stateMachineArn=arns["state_machine_arn"], input="{}")
        result = wait_for_execution(execution["executionArn"], on_event=lambda event: None, timeout=120)
    if result["status"] != "SUCCEEDED":
        raise DaemonError(f"the warm-up execution ended {result['status']}: {result.get('cause')}")
    return cli, handlers


def serve(state_dir, ready):
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
        from totesys_local.aws_emulation import kept_pipeline
        from totesys_local.runner import _environment, local_account_environment
        path = socket_path(state)
        with lock, _environment(local_account_environment()), kept_pipeline(handlers, "totesys"):
            listener = _listen(path)
            listening = os.stat(path).st_ino
            (state / PID_NAME).write_text(f"{os.getpid()}\n")
            emulator = Emulator(listener, fingerprint, idle_seconds(),
                                lambda argv: cli.run_in_process(cli.build_parser().parse_args(argv)),
                                on_restart=lambda: _remove_own_files(state, path, listening))
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


def _remove_own_files(state, path, inode):
    """Remove the socket and the pid file, unless a newer emulator has already replaced them."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            path.unlink()
    with contextlib.suppress(OSError, ValueError):
        if int((state / PID_NAME).read_text()) == os.getpid():
            (state / PID_NAME).unlink()
