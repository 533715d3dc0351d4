"""The local stack on real processes: Prefect server, process worker, MLflow server (no mocks).

Each test passes alone and in any order: every one starts from a running stack and leaves it
running (the `down` test ends with a restart on the same home).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.stack import COMPONENTS, POOL_NAME, POOL_TYPE, WORKER_NAME, group_alive, pid_alive, port_free

from .conftest import ROOT, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]


def _read_proc(pid: int, what: str) -> str:
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stack_processes(stack: Stack) -> set[int]:
    """Every live process of this stack, found from /proc rather than the pid files (so a duplicate
    would show): servers by their port on the command line, workers by the API URL in their environment."""
    server_marks = (f"--port {stack.prefect_port}", f"--port {stack.mlflow_port}")
    worker_mark = f"PREFECT_API_URL={stack.prefect_api_url} "
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(pid := int(entry.name)):
            continue
        cmd = _read_proc(pid, "cmdline")
        if any(m in cmd for m in server_marks) and ("prefect" in cmd or "mlflow" in cmd or "uvicorn" in cmd):
            found.add(pid)
        elif "worker start" in cmd and worker_mark in _read_proc(pid, "environ") + " ":
            found.add(pid)
    return found


def _cli_without_home(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m deployments.stack <args>` with no --home, its default home another, empty folder
    (EVERGREEN_HOME): as a user who started the stack with --home and forgot it."""
    env = {**os.environ, "EVERGREEN_HOME": str(tmp_path / "another-home")}
    argv = [sys.executable, "-m", "deployments.stack", *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _online_workers(stack: Stack) -> list[dict[str, Any]]:
    r = httpx.post(f"{stack.prefect_api_url}/work_pools/{POOL_NAME}/workers/filter", json={}, timeout=10)
    r.raise_for_status()
    return [w for w in r.json() if w["status"] == "ONLINE"]


def test_prefect_server_healthy(stack: Stack) -> None:
    r = httpx.get(f"{stack.prefect_api_url}/health", timeout=10)
    assert r.status_code == 200, r.text


def test_prefect_ui_is_told_the_stacks_api_url(stack: Stack) -> None:
    # The UI page asks the server where the API is (GET /ui-settings) and calls that URL from the
    # browser; Prefect's default names port 4200 whatever port the server listens on.
    assert stack.prefect_port != 4200
    r = httpx.get(f"{stack.prefect_ui_url}/ui-settings", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["api_url"] == stack.prefect_api_url
    page = httpx.get(f"{stack.prefect_ui_url}/", timeout=10, follow_redirects=True)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_work_pool_exists(stack: Stack) -> None:
    r = httpx.get(f"{stack.prefect_api_url}/work_pools/{POOL_NAME}", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["type"] == POOL_TYPE

    r = httpx.post(f"{stack.prefect_api_url}/work_pools/filter", json={}, timeout=10)
    r.raise_for_status()
    assert [p["name"] for p in r.json()].count(POOL_NAME) == 1


def test_worker_registered_and_online(stack: Stack) -> None:
    online = _online_workers(stack)
    assert [w["name"] for w in online] == [WORKER_NAME], online


def test_mlflow_server_healthy_and_client_creates_experiment(stack: Stack) -> None:
    r = httpx.get(f"{stack.mlflow_url}/health", timeout=10)
    assert r.status_code == 200, r.text

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_url)
    name = f"e2e-stack-{uuid.uuid4().hex[:8]}"
    exp_id = client.create_experiment(name)
    exp = client.get_experiment(exp_id)
    assert exp.name == name
    # The server uses the stack's home: its SQLite store and artifact root.
    assert exp.artifact_location.startswith((stack.home / "mlartifacts").as_uri())
    with sqlite3.connect(stack.home / "mlflow.db") as db:
        names = {row[0] for row in db.execute("SELECT name FROM experiments")}
    assert name in names


def test_status_reports_running(stack: Stack) -> None:
    res = stack.cli("status", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    body = json.loads(res.stdout)
    assert body["running"] is True
    assert body["prefect_api_url"] == stack.prefect_api_url
    assert body["mlflow_url"] == stack.mlflow_url
    pids = stack.pids()
    assert {c["component"] for c in body["components"]} == set(COMPONENTS)
    for c in body["components"]:
        assert c["state"] == "running" and c["healthy"], c
        assert c["pid"] == pids[c["component"]]

    res = stack.cli("status")
    assert res.returncode == 0, res.stdout + res.stderr
    for name in COMPONENTS:
        assert name in res.stdout
    assert res.stdout.count("running") == len(COMPONENTS)


def test_status_without_home_finds_the_stack_started_elsewhere(stack: Stack, tmp_path: Path) -> None:
    res = _cli_without_home(tmp_path, "status", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    body = json.loads(res.stdout)
    assert body["running"] is True
    assert body["home"] == str(stack.home)
    assert body["prefect_api_url"] == stack.prefect_api_url
    # It says which stack it reports on, and how to name it.
    assert f"--home {stack.home}" in res.stderr
    assert str(tmp_path / "another-home") in res.stderr


def test_up_again_starts_no_duplicates(stack: Stack) -> None:
    pids_before = stack.pids()
    procs_before = _stack_processes(stack)
    assert all(pids_before.values()), pids_before
    assert set(pids_before.values()) <= procs_before
    assert len(procs_before) == 4, procs_before  # Prefect server, worker, MLflow server and its uvicorn child

    res = stack.cli("up")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "already running" in res.stdout
    assert "starting" not in res.stdout

    assert stack.pids() == pids_before
    assert _stack_processes(stack) == procs_before
    assert len(_online_workers(stack)) == 1


def test_down_stops_everything_is_idempotent_and_up_restarts(stack: Stack, tmp_path: Path) -> None:
    pids = stack.pids()
    assert all(pids.values()), pids
    members = _stack_processes(stack)

    # Without --home, as a user who started it with --home would: `down` finds it all the same.
    t0 = time.monotonic()
    res = _cli_without_home(tmp_path, "down")
    down_seconds = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"--home {stack.home}" in res.stderr
    assert res.stdout.count("stopped (pid") == len(COMPONENTS), res.stdout
    for name, pid in pids.items():
        assert pid is not None
        assert not pid_alive(pid), f"{name} (pid {pid}) still alive"
        assert not group_alive(pid), f"{name}: process group {pid} not empty"
        assert not COMPONENTS[name].pid_file(stack.config).exists()
    assert not any(pid_alive(p) for p in members), "uvicorn children or other stack processes survived"
    assert port_free(stack.host, stack.prefect_port)
    assert port_free(stack.host, stack.mlflow_port)

    again = stack.down()
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("not running") == len(COMPONENTS)

    status = stack.cli("status", "--json")
    assert status.returncode == 3
    assert {c["state"] for c in json.loads(status.stdout)["components"]} == {"stopped"}
    # Nothing runs anywhere now: without --home, status reports its own default home, stopped.
    status = _cli_without_home(tmp_path, "status", "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["home"] == str(tmp_path / "another-home")

    # Restart on the same home: state persists (the pool exists already), new processes, all healthy.
    up_seconds = stack.up()
    new_pids = stack.pids()
    assert all(new_pids.values()) and set(new_pids.values()).isdisjoint(pids.values())
    assert httpx.get(f"{stack.prefect_api_url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{stack.mlflow_url}/health", timeout=10).status_code == 200
    assert len(_online_workers(stack)) == 1
    print(f"\nstack down in {down_seconds:.1f} s, restarted in {up_seconds:.1f} s")
