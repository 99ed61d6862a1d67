"""The project's own PostgreSQL: the one module that finds, starts and stops a server.

Order of preference:
1. a server the user names by URL (``TOTESYS_PG_URL`` for tests, ``--source``/``--warehouse`` for runs);
2. a throwaway cluster from PostgreSQL server binaries on this machine (``pg_config --bindir``,
   ``PATH``, ``/usr/lib/postgresql/*/bin``);
3. the binaries bundled in the ``pgserver`` package from PyPI.

``initdb`` and ``postgres`` refuse to run as root, so when we are root the server runs as an
unprivileged user (``postgres``, created if absent) through ``runuser``; we connect over TCP.
"""
import glob
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess  # nosec B404 - runs the PostgreSQL server binaries only
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union
from urllib.parse import quote

import pg8000.native

from totesys_local.errors import LocalError

# Where throwaway clusters (``temporary_cluster``) and the data of a state folder the server user cannot
# enter go: the temporary directory, or this folder (the test suite points it at a folder it removes).
PGDATA_PARENT_VARIABLE = "TOTESYS_PGDATA_PARENT"
SUPERUSER = "totesys"
SERVER_USER = "postgres"
_REQUIRED = ("initdb", "pg_ctl", "postgres")


class ClusterError(LocalError, RuntimeError):
    """The local PostgreSQL could not be found, started or reached."""


def _has_server_binaries(bindir: Optional[str]) -> bool:
    return bool(bindir and all(os.access(os.path.join(bindir, name), os.X_OK) for name in _REQUIRED))


def _version_key(path: str) -> List[int]:
    digits = "".join(ch if ch.isdigit() else " " for ch in path).split()
    return [int(d) for d in digits]


def find_bindir() -> str:
    """Return a directory holding initdb, pg_ctl and postgres, or raise ClusterError."""
    candidates: List[str] = []
    if os.environ.get("TOTESYS_PG_BINDIR"):
        candidates.append(os.environ["TOTESYS_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(  # nosec B603 - fixed argument list
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True))
    candidates.extend(sorted(glob.glob("/usr/local/pgsql*/bin"), reverse=True))
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    try:  # last resort, imported only when needed: the pgserver package bundles PostgreSQL 16
        import pgserver
        bundled = str(Path(pgserver.__file__).parent / "pginstall" / "bin")
        if _has_server_binaries(bundled):
            return bundled
    except ImportError:
        pass
    raise ClusterError(
        "no PostgreSQL server binaries found (looked at pg_config --bindir, PATH, "
        "/usr/lib/postgresql/*/bin and the pgserver package); install PostgreSQL or "
        "`pip install pgserver`, or point TOTESYS_PG_URL at a server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ensure_server_user() -> None:
    """As root, make sure the unprivileged user that runs the server exists."""
    try:
        import pwd
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(  # nosec B603 B607 - fixed argument list
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True, capture_output=True)


def _run(args: Sequence[str], **kwargs: Any) -> "subprocess.CompletedProcess[str]":
    """Run a server binary, through runuser when we are root."""
    if _as_root():
        args = ["runuser", "-u", SERVER_USER, "--"] + list(args)
    return subprocess.run(args, capture_output=True, text=True, **kwargs)  # nosec B603


def _server_can_reach(path: Path) -> bool:
    """As root: can the server user enter ``path``? (a clone under /root is mode 700)"""
    if not _as_root():
        return True
    result = _run(["test", "-x", str(path)], check=False)
    return result.returncode == 0


@dataclass
class ClusterInfo:
    """Where a cluster lives and how to reach it (persisted as JSON for reuse)."""
    datadir: str
    bindir: str
    port: int
    password: str
    host: str = "127.0.0.1"
    user: str = SUPERUSER

    def url(self, database: str = "postgres") -> str:
        return (f"postgresql://{quote(self.user)}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{database}")

    def credentials(self, database: str = "postgres") -> Dict[str, Union[str, int]]:
        return {"host": self.host, "port": self.port, "database": database,
                "user": self.user, "password": self.password}


class Cluster:
    """A PostgreSQL cluster this project owns: initialised, started and stopped here."""

    def __init__(self, info: ClusterInfo) -> None:
        self.info = info

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, datadir: Union[str, Path], bindir: Optional[str] = None,
               port: Optional[int] = None) -> "Cluster":
        """initdb a new cluster in ``datadir`` (which must not exist or be empty)."""
        bindir = bindir or find_bindir()
        datadir = Path(datadir)
        if _as_root():
            _ensure_server_user()
        datadir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            shutil.chown(datadir, SERVER_USER, SERVER_USER)
            os.chmod(datadir, 0o700)
        info = ClusterInfo(datadir=str(datadir), bindir=bindir, port=port or free_port(),
                           password=secrets.token_urlsafe(18))
        pwfile = datadir.parent / f".{datadir.name}.pw"
        pwfile.write_text(info.password + "\n")
        os.chmod(pwfile, 0o600)
        if _as_root():
            shutil.chown(pwfile, SERVER_USER, SERVER_USER)
        try:
            result = _run([os.path.join(bindir, "initdb"), "-D", str(datadir), "-U", SUPERUSER,
                           "--pwfile", str(pwfile), "--auth-local=trust",
                           "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
                           "--no-sync"], check=False, timeout=120)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ClusterError(f"initdb failed: {result.stderr.strip()[-500:]}")
        with open(datadir / "postgresql.conf", "a") as conf:
            # A throwaway/development cluster: durability is traded for speed.
            conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 100\nshared_buffers = 128MB\n"
                       "timezone = 'UTC'\nlog_timezone = 'UTC'\n")
        return cls(info)

    def start(self) -> "Cluster":
        """Start the server (listening on 127.0.0.1 only) and wait until it accepts connections."""
        info = self.info
        if not _port_is_free(info.port):
            info.port = free_port()
        sockdir = info.datadir  # keep the Unix socket inside the cluster's own folder
        # wal_level = logical: INGEST_MODE=cdc reads a logical replication slot (utils/ingest/cdc); set on
        # the command line so that clusters created before it get it too. wal_writer_delay: asynchronous
        # commits reach the flushed WAL (where decoding stops) within 10 ms.
        options = (f"-h {info.host} -p {info.port} -k {sockdir} -c wal_level=logical "
                   "-c max_replication_slots=64 -c wal_writer_delay=10ms")
        result = _run([os.path.join(info.bindir, "pg_ctl"), "-D", info.datadir, "-o", options,
                       "-l", os.path.join(info.datadir, "server.log"), "-w", "-t", "60", "start"],
                      check=False, timeout=90)
        if result.returncode != 0:
            log = Path(info.datadir, "server.log")
            tail = log.read_text()[-800:] if log.exists() else ""
            raise ClusterError(f"PostgreSQL did not start: {result.stderr.strip()} {tail}")
        self.wait_ready()
        return self

    def wait_ready(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.connect().close()
                return
            except Exception:  # noqa: BLE001 - retried until the deadline
                if time.monotonic() > deadline:
                    raise ClusterError(f"PostgreSQL on port {self.info.port} is not answering")
                time.sleep(0.1)

    def is_running(self) -> bool:
        try:
            self.connect().close()
            return True
        except Exception:  # noqa: BLE001
            return False

    def stop(self) -> None:
        """Stop the server (fast shutdown); stopping a stopped cluster is fine."""
        if not os.path.exists(os.path.join(self.info.datadir, "postmaster.pid")):
            return
        _run([os.path.join(self.info.bindir, "pg_ctl"), "-D", self.info.datadir, "-m", "fast",
              "-w", "stop"], check=False, timeout=60)

    def destroy(self) -> None:
        """Stop the server and delete its files (and the temporary folder it was made in)."""
        self.stop()
        datadir = Path(self.info.datadir)
        shutil.rmtree(datadir, ignore_errors=True)
        if datadir.parent.name.startswith("totesys-pg-"):
            shutil.rmtree(datadir.parent, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        return self.info.url(database)

    def connect(self, database: str = "postgres") -> pg8000.native.Connection:
        return pg8000.native.Connection(
            user=self.info.user, password=self.info.password, host=self.info.host,
            port=self.info.port, database=database, timeout=10,
            startup_params={"TimeZone": "UTC"})

    def create_database(self, name: str, template: Optional[str] = None) -> None:
        create_database(self.url(), name, template)

    def drop_database(self, name: str) -> None:
        drop_database(self.url(), name)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def admin_connection(url: str) -> Any:
    """Connect to a server given by URL (database from the URL)."""
    from utils.db.connection import connect_to_db, credentials_from_url
    return connect_to_db(credentials=credentials_from_url(url))


def create_database(admin_url: str, name: str, template: Optional[str] = None) -> None:
    """CREATE DATABASE name [TEMPLATE template] on the server of ``admin_url``."""
    from pg8000.native import identifier
    conn = admin_connection(admin_url)
    try:
        sql = f"CREATE DATABASE {identifier(name)}"
        if template:
            sql += f" TEMPLATE {identifier(template)}"
        conn.run(sql)
    finally:
        conn.close()


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE name (if it exists), after dropping its inactive replication slots (a CDC slot would
    otherwise block the drop, and keep WAL for a database that is gone)."""
    from pg8000.native import identifier
    conn = admin_connection(admin_url)
    try:
        conn.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 "WHERE database = :name AND NOT active", name=name)
        conn.run(f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)")
    finally:
        conn.close()


def with_database(url: str, database: str) -> str:
    """Return ``url`` with its database name replaced."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, ""))


# -- the throwaway cluster for tests and the persistent one under .local/ ------------------------

def pgdata_parent() -> Path:
    """The folder that holds throwaway clusters: TOTESYS_PGDATA_PARENT, else the temporary directory."""
    return Path(os.environ.get(PGDATA_PARENT_VARIABLE) or tempfile.gettempdir())


def temporary_cluster() -> Cluster:
    """Create and start a cluster in a fresh temporary folder; caller must ``destroy()`` it."""
    base = Path(tempfile.mkdtemp(prefix="totesys-pg-", dir=pgdata_parent()))
    if _as_root():
        os.chmod(base, 0o755)  # nosec B103 - the server user must enter it; files inside are 0700
    cluster = Cluster.create(base / "data")
    return cluster.start()


def local_cluster(state_dir: Union[str, Path]) -> Cluster:
    """Return the running persistent cluster for ``state_dir`` (default ``.local``), starting or
    creating it as needed. Its connection details are kept in ``state_dir/cluster.json`` (mode 600)."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    record = state_dir / "cluster.json"
    if record.exists():
        info = ClusterInfo(**json.loads(record.read_text()))
        cluster = Cluster(info)
        if cluster.is_running():
            return cluster
        if Path(info.datadir, "PG_VERSION").exists():
            cluster.start()
            _save(record, cluster.info)
            return cluster
    datadir = state_dir / "pgdata"
    if _as_root():
        os.chmod(state_dir, 0o755)  # nosec B103 - the server user must enter it; pgdata is 0700
        if not _server_can_reach(state_dir):
            # The server user cannot enter this folder (e.g. a clone under /root): keep the data
            # in a folder of its own, recorded in cluster.json.
            datadir = pgdata_parent() / (
                "totesys-pgdata-" + hashlib.sha256(str(state_dir).encode()).hexdigest()[:12])
    if datadir.exists():
        shutil.rmtree(datadir)
    cluster = Cluster.create(datadir).start()
    _save(record, cluster.info)
    return cluster


def stop_local_cluster(state_dir: Union[str, Path]) -> bool:
    """Stop the persistent cluster of ``state_dir`` if there is one; return True if it was running."""
    record = Path(state_dir) / "cluster.json"
    if not record.exists():
        return False
    cluster = Cluster(ClusterInfo(**json.loads(record.read_text())))
    running = cluster.is_running()
    cluster.stop()
    return running


def _save(record: Path, info: ClusterInfo) -> None:
    record.write_text(json.dumps(asdict(info), indent=2))
    os.chmod(record, 0o600)
