"""Real servers for tests: PostgreSQL and Redis from Debian packages, an S3 API from PyPI (moto's
server mode), a Dask cluster from PyPI (distributed), each on a free 127.0.0.1 port with its own temp folder, stopped by whoever started it.

A test module takes the fixtures ``postgresql_server``, ``redis_server`` and ``s3_server`` by importing them
(``from tests.servers import postgresql_server``: ``pytest_plugins`` would fail once another module
has imported this one first). Each importing module gets its own server, kept until the run ends
(a second server costs about a second). A test that needs a server of its own (to see it stop)
uses ``running_postgresql()`` / ``running_redis()`` directly. A missing binary fails the test and
names the Debian package: a skipped test would pass CI without the database it exists to exercise.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.conftest import free_port

if TYPE_CHECKING:
    import psycopg

HOST = "127.0.0.1"
PG_USER = "evergreen"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def _fail_missing(binary: str, package: str) -> NoReturn:
    pytest.fail(f"{binary} not found: install the Debian package {package} (apt-get install {package})", pytrace=False)


def postgresql_bin() -> Path:
    """The bin directory of the newest installed PostgreSQL with both initdb and postgres (Debian keeps
    them off PATH, in /usr/lib/postgresql/<version>/bin); PATH as a fallback for other layouts."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))

    for bin_dir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True):
        if (bin_dir / "initdb").is_file() and (bin_dir / "postgres").is_file():
            return bin_dir
    on_path = shutil.which("postgres")
    if on_path and (Path(on_path).resolve().parent / "initdb").is_file():
        return Path(on_path).resolve().parent
    _fail_missing("PostgreSQL (initdb, postgres)", "postgresql")


def redis_bin() -> Path:
    found = shutil.which("redis-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin")
    if not found:
        _fail_missing("redis-server", "redis-server")
    return Path(found)


def _clean_env() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, PGHOST, ...) from the caller's shell would point the server or
    # its tools at another cluster; C locale so initdb never depends on the machine's locales.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


@dataclass(frozen=True)
class RunAs:
    """Popen's user, group and supplementary groups; all None: the invoking user."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


def unprivileged() -> RunAs:
    """PostgreSQL refuses to run as root, and CI runs tests as root: there it runs as nobody; as a
    normal user, as that user. Python drops the ids itself (Popen's user/group), so neither runuser
    nor sudo needs to exist, and the process started is the server itself, the one to signal."""
    if os.geteuid() != 0:
        return RunAs()
    nobody = pwd.getpwnam("nobody")
    return RunAs(nobody.pw_uid, nobody.pw_gid, [])


def _log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return "(no log)"


def spawn(argv: list[str], cwd: Path, log_path: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """A server process leading its own process group (so ``stop`` reaches its children), its
    output in ``log_path``."""
    with log_path.open("w") as log:
        return subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen)


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], log_path: Path, what: str, timeout: float = START_TIMEOUT
) -> None:
    """Until ``ready()`` is true; fails with the server's log if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before answering; its log:\n{_log(log_path)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer within {timeout:.0f} s; its log:\n{_log(log_path)}")
        time.sleep(0.2)


def stop(
    proc: subprocess.Popen[bytes], graceful: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT
) -> None:
    """The graceful signal to the server, SIGKILL to its whole process group if it is still there
    after ``timeout`` (the server leads a process group of its own: the server and its children)."""
    if proc.poll() is None:
        proc.send_signal(graceful)
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their parent, too
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout)


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL: ``url`` is its ``postgres`` database; ``create_database()`` gives the
    URL of a brand-new one (no tables), so each test owns its schema from the first statement."""

    port: int
    user: str
    directory: Path

    def database_url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{HOST}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(host=HOST, port=self.port, user=self.user, dbname=database, **kwargs)

    def create_database(self, name: str | None = None) -> str:
        from psycopg import sql

        name = name or f"test_{uuid.uuid4().hex[:12]}"
        with self.connect(autocommit=True) as conn:  # CREATE DATABASE cannot run in a transaction
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)


@contextmanager
def running_postgresql(timeout: float = START_TIMEOUT) -> Iterator[PostgresServer]:
    """A fresh cluster (trust auth, TCP on 127.0.0.1 only) in a temp folder owned by the user it runs
    as; removed after the server stops. The folder is not under pytest's tmp_path: that is private
    to the invoking user, and the server may run as another."""
    bin_dir = postgresql_bin()
    run_as = unprivileged()
    env = _clean_env()
    base = Path(tempfile.mkdtemp(prefix="evergreen-postgres-"))
    try:
        if run_as.user is not None and run_as.group is not None:
            os.chown(base, run_as.user, run_as.group)
        env["HOME"] = str(base)
        data = base / "data"
        init = subprocess.run(
            [
                *(str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust"),
                *("-E", "UTF8", "--locale=C", "--no-sync"),
            ],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            user=run_as.user,
            group=run_as.group,
            extra_groups=run_as.extra_groups,
        )
        if init.returncode != 0:
            raise AssertionError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        port = free_port()
        server = PostgresServer(port, PG_USER, base)
        log_path = base / "postgres.log"
        proc = spawn(
            [
                *(str(bin_dir / "postgres"), "-D", str(data), "-p", str(port)),
                # The socket in the temp folder: the default /var/run/postgresql belongs to the
                # packaged cluster and is not writable by this user.
                *("-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={base}"),
                # Throwaway data: no fsync, so tests do not wait on the disk.
                *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            ],
            base,
            log_path,
            env=env,
            user=run_as.user,
            group=run_as.group,
            extra_groups=run_as.extra_groups,
        )
        try:

            def ready() -> bool:
                import psycopg

                try:
                    server.connect(connect_timeout=2).close()
                    return True
                except psycopg.OperationalError:
                    return False

            wait_until(ready, proc, log_path, f"postgres on port {port}", timeout)
            yield server
        finally:
            # SIGINT is PostgreSQL's "fast" shutdown: it closes open client connections (connection pools
            # of the test process hold some until exit); SIGTERM ("smart") would wait for them all.
            stop(proc, signal.SIGINT)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def running_redis(timeout: float = START_TIMEOUT) -> Iterator[str]:
    """A redis-server without persistence in a temp folder, yielded as its URL once it answers PING."""
    binary = redis_bin()
    base = Path(tempfile.mkdtemp(prefix="evergreen-redis-"))
    try:
        port = free_port()
        log_path = base / "redis.log"
        proc = spawn(
            [
                *(str(binary), "--port", str(port), "--bind", HOST),
                *("--save", "", "--appendonly", "no", "--dir", str(base)),
            ],
            base,
            log_path,
        )
        url = f"redis://{HOST}:{port}"
        try:

            def ready() -> bool:
                import redis

                client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
                try:
                    return bool(client.ping())
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    return False
                finally:
                    client.close()

            wait_until(ready, proc, log_path, f"redis-server on port {port}", timeout)
            yield url
        finally:
            stop(proc, signal.SIGTERM)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class S3Server:
    """A running S3 API: ``env`` holds the standard AWS_* variables that point boto3, pyarrow and
    MLflow at it; ``create_bucket()`` makes a new, empty bucket."""

    url: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "evergreen-test",
            "AWS_SECRET_ACCESS_KEY": "evergreen-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        env = self.env
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@contextmanager
def running_s3(timeout: float = START_TIMEOUT) -> Iterator[S3Server]:
    """moto's S3 server (state in memory) as its own process, yielded once it answers."""
    base = Path(tempfile.mkdtemp(prefix="evergreen-s3-"))
    try:
        port = free_port()
        log_path = base / "moto.log"
        proc = spawn([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)], base, log_path)
        server = S3Server(f"http://{HOST}:{port}")
        try:

            def ready() -> bool:
                import botocore.exceptions

                try:
                    server.client().list_buckets()
                    return True
                except botocore.exceptions.EndpointConnectionError:
                    return False

            wait_until(ready, proc, log_path, f"moto S3 server on port {port}", timeout)
            yield server
        finally:
            stop(proc, signal.SIGTERM)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class DaskCluster:
    """A running Dask scheduler and its workers (one thread each): ``address`` for clients,
    ``worker_pids`` the processes that run tasks."""

    address: str
    worker_pids: frozenset[int]


@contextmanager
def running_dask(workers: int = 2, timeout: float = START_TIMEOUT) -> Iterator[DaskCluster]:
    """A ``dask scheduler`` and ``workers`` one-thread ``dask worker`` processes (distributed, from
    PyPI) on 127.0.0.1, yielded once every worker has joined."""
    from distributed import Client

    base = Path(tempfile.mkdtemp(prefix="evergreen-dask-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        address = f"tcp://{HOST}:{port}"
        scheduler_log = base / "scheduler-0.log"
        argv = {
            "scheduler": [sys.executable, "-m", "distributed.cli.dask_scheduler"]
            + ["--host", HOST, "--port", str(port), "--no-dashboard"],
            "worker": [sys.executable, "-m", "distributed.cli.dask_worker", address]
            + ["--host", HOST, "--nthreads", "1", "--no-dashboard", "--local-directory", str(base)],
        }
        for name, count in (("scheduler", 1), ("worker", workers)):
            procs += [spawn(argv[name], base, base / f"{name}-{i}.log") for i in range(count)]
        try:

            def ready() -> bool:
                try:
                    with Client(address, timeout=2) as client:
                        return len(client.scheduler_info(n_workers=-1)["workers"]) == workers
                except OSError:
                    return False

            wait_until(ready, procs[0], scheduler_log, f"dask scheduler with {workers} workers on port {port}", timeout)
            with Client(address, timeout=10) as client:
                pids = frozenset(client.run(os.getpid).values())
            yield DaskCluster(address, pids)
        finally:
            for proc in reversed(procs):
                stop(proc, signal.SIGTERM)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    with running_postgresql() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    with running_redis() as url:
        yield url
