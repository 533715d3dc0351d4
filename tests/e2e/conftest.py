"""End-to-end fixtures: the real local stack (deployments/stack.py) on free ports in a temp home.

`stack` is session-scoped: start it once, reuse it from every e2e module (deploying flows, firing
events). It is started through the real CLI (`python -m deployments.stack up`), as a user would, and
always stopped at the end of the session, also when a test or the start itself fails. The stack is
shared infrastructure only: a test that needs a registered model trains its own (`flow_config`
gives it a config with its own model name), so no test depends on what another one left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from deployments.stack import COMPONENTS, POOL_NAME, StackConfig, free_ports, group_alive, read_pid

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# Flow runs are picked up within this many seconds (the CLI default is 10).
WORKER_POLL = 2.0
UP_TIMEOUT = 240.0
DOWN_TIMEOUT = 120.0


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
TRIGGER_WAIT = 360.0  # seconds for a drift event to become a flow run of the retraining deployment


class PrefectApi(Protocol):
    """What the API helpers below need: a Prefect server's API URL (the stack, or any server)."""

    @property
    def prefect_api_url(self) -> str: ...


@dataclass(frozen=True)
class Stack:
    """A running local stack: where it lives, where to reach it, and its CLI."""

    home: Path
    host: str
    prefect_port: int
    mlflow_port: int
    worker_poll: float = WORKER_POLL
    pool: str = POOL_NAME

    @property
    def config(self) -> StackConfig:
        return StackConfig(self.home, self.host, self.prefect_port, self.mlflow_port, self.worker_poll)

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def prefect_ui_url(self) -> str:
        return self.config.prefect_ui_url

    @property
    def prefect_api_url(self) -> str:
        return self.config.prefect_api_url

    @property
    def mlflow_url(self) -> str:
        return self.config.mlflow_url

    @property
    def config_file(self) -> Path:
        """The config the worker's flow runs read when a run names none (EVERGREEN_CONFIG)."""
        return self.home / "e2e-config.yaml"

    def env(self) -> dict[str, str]:
        """Environment for a client process (e.g. `prefect deploy`) talking to this stack."""
        env = dict(os.environ)
        env.update(
            PREFECT_API_URL=self.prefect_api_url,
            EVERGREEN_TRACKING_URI=self.mlflow_url,
            EVERGREEN_HOME=str(self.home),
            EVERGREEN_CONFIG=str(self.config_file),
        )
        return env

    def pids(self) -> dict[str, int | None]:
        return {name: read_pid(comp, self.config) for name, comp in COMPONENTS.items()}

    def cli(self, *args: str, timeout: float = DOWN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run `python -m deployments.stack <args> --home <home> ...` from the repo root."""
        argv = [sys.executable, "-m", "deployments.stack", *args, "--home", str(self.home)]
        if args and args[0] == "up":
            argv += [
                "--host",
                self.host,
                "--prefect-port",
                str(self.prefect_port),
                "--mlflow-port",
                str(self.mlflow_port),
                "--worker-poll",
                f"{self.worker_poll:g}",
            ]
        # The worker inherits EVERGREEN_CONFIG from `up` (also from the `up` of a restart).
        env = {**os.environ, "EVERGREEN_CONFIG": str(self.config_file)}
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def up(self) -> float:
        """Start (or confirm) the stack; returns the seconds it took. Fails the test with the output."""
        t0 = time.monotonic()
        res = self.cli("up", timeout=UP_TIMEOUT)
        if res.returncode != 0:
            pytest.fail(f"stack up failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
        return time.monotonic() - t0

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.cli("down")

    def kill_leftovers(self) -> list[str]:
        """Last resort after `down`: SIGKILL any process group still named in a pid file."""
        killed = []
        for name, pid in self.pids().items():
            if pid is not None and group_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                    killed.append(f"{name} (pgid {pid})")
                except ProcessLookupError:
                    pass
        return killed


def flow_config(st: Stack, path: Path, model_name: str | None = None) -> Path:
    """A config for flow runs on this stack: the flights example with its home and MLflow server, a
    tiny tuning budget and, if given, a model name of the test's own (default: the example's)."""
    from tests.conftest import write_config
    from tests.flows.conftest import SMALL

    registry = {**SMALL["registry"], "tracking_uri": st.mlflow_url}
    if model_name is not None:
        registry["model_name"] = model_name
    return write_config(path, st.home, "flights", **{**SMALL, "registry": registry})


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefect_port, mlflow_port = free_ports(2)
    st = Stack(
        home=tmp_path_factory.mktemp("evergreen-stack"), host=HOST, prefect_port=prefect_port, mlflow_port=mlflow_port
    )
    # The worker's default config (EVERGREEN_CONFIG, passed to `up` and so to the worker; this
    # process's environment is left alone, so later non-e2e tests do not see it).
    flow_config(st, st.config_file)
    try:
        seconds = st.up()
        print(f"\nstack up in {seconds:.1f} s: {st.prefect_ui_url} {st.mlflow_url} (home {st.home})")
        yield st
    finally:
        try:
            res = st.down()
            if res.returncode != 0:
                print(f"stack down failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
        finally:
            leftovers = st.kill_leftovers()
            if leftovers:
                print(f"killed leftover process groups: {', '.join(leftovers)}")


def api(stack: PrefectApi, method: str, path: str, **kw: Any) -> Any:
    """One API call; a 503 or a read timeout (the SQLite-backed server busy while a flow trains on
    the same two cores) is retried as Prefect's own client retries it, with backoff, before it
    counts as a failure. Only reads are retried after a timeout: a write may have happened."""
    reads = method == "GET" or path.endswith("/filter")
    for attempt in range(6):
        try:
            r = httpx.request(method, f"{stack.prefect_api_url}{path}", timeout=60, **kw)
        except httpx.ReadTimeout:
            if attempt == 5 or not reads:
                raise
            continue
        if r.status_code != 503:
            break
        time.sleep(0.5 * 2**attempt)
    r.raise_for_status()
    return r.json() if r.content else None


def runs_of(stack: PrefectApi, deployment_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """The deployment's flow runs (created at or after `since`, if given)."""
    runs: list[dict[str, Any]] = api(
        stack, "POST", "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}}
    )
    if since is None:
        return runs
    return [r for r in runs if datetime.fromisoformat(r["created"]) >= since]


def run(stack: PrefectApi, deployment_id: str, params: dict[str, Any], timeout: float = 420) -> dict[str, Any]:
    """Run a deployment through the worker and wait for a final state (like `prefect deployment run --watch`)."""
    fr = api(stack, "POST", f"/deployments/{deployment_id}/create_flow_run", json={"parameters": params})
    return wait(stack, fr["id"], timeout)


def wait(stack: PrefectApi, flow_run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fr: dict[str, Any] = api(stack, "GET", f"/flow_runs/{flow_run_id}")
        if fr["state"]["type"] in FINAL:
            return fr
        time.sleep(1)
    pytest.fail(f"flow run {flow_run_id} did not finish in {timeout} s (last state {fr['state']['type']})")
