"""Deployments for real: `prefect deploy --all` against the local stack (Prefect server, process
worker, MLflow server on free 127.0.0.1 ports, temp home), runs through the worker, the drift event
and its trigger.

Every test passes alone and in any order: a test that needs a registered model trains its own
(a config with its own model name), except the drift storm, which uses the worker's default config
(its events name no config) and is the only test that trains that model."""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import ROOT

from .conftest import TRIGGER_WAIT, Stack, api, flow_config, run, runs_of, wait

if TYPE_CHECKING:
    from mlflow import MlflowClient

pytestmark = pytest.mark.e2e

# The worker's default config's model: an alert that names no config retrains it.
WATCHED_MODEL = "evergreen-flight-delay"
DRIFT_EVENT = "evergreen.drift.detected"
TRAIN_AS_OF = "2013-04-01"


def drift_events(stack: Stack, model: str, since: datetime) -> list[dict[str, Any]]:
    """`evergreen.drift.detected` events about `model` that occurred at or after `since`."""
    body = {
        "filter": {
            "occurred": {"since": since.isoformat()},
            "event": {"name": [DRIFT_EVENT]},
            "resource": {"id": [f"evergreen.model.{model}"]},
        },
        "limit": 50,
    }
    events: list[dict[str, Any]] = api(stack, "POST", "/events/filter", json=body)["events"]
    return events


def emit_drift(stack: Stack, as_of: str, n: int) -> None:
    """What an external alert (Alertmanager relay, operator with curl) sends: the same event."""
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "id": str(uuid.uuid4()),
            "occurred": now,
            "event": DRIFT_EVENT,
            "resource": {"prefect.resource.id": f"evergreen.model.{WATCHED_MODEL}"},
            "payload": {"as_of": as_of, "source": "test-alert-storm"},
        }
        for _ in range(n)
    ]
    api(stack, "POST", "/events", json=events)


def registry(stack: Stack) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)


@pytest.fixture(scope="module")
def deployments(stack: Stack) -> dict[str, str]:
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "prefect"), "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    flows = {f["id"]: f["name"] for f in api(stack, "POST", "/flows/filter", json={})}
    return {f"{flows[d['flow_id']]}/{d['name']}": d["id"] for d in api(stack, "POST", "/deployments/filter", json={})}


@pytest.fixture(scope="module")
def features(stack: Stack, deployments: dict[str, str]) -> dict[str, Any]:
    """The offline feature tables and the online store in the stack's home (rebuilt, not a model)."""
    built = run(stack, deployments["features/features"], {})
    assert built["state"]["type"] == "COMPLETED", built["state"]
    return built


@dataclass(frozen=True)
class Trained:
    model: str
    config: Path
    flow_run: dict[str, Any]


def train(stack: Stack, deployments: dict[str, str], model: str, config: Path) -> Trained:
    """One on-demand training run through the worker; on a fresh model its version 1 becomes champion."""
    trained = run(stack, deployments["training/training"], {"config": str(config), "as_of": TRAIN_AS_OF})
    assert trained["state"]["type"] == "COMPLETED", trained["state"]
    return Trained(model, config, trained)


@pytest.fixture(scope="module")
def own_model(stack: Stack, deployments: dict[str, str], features: dict[str, Any]) -> Trained:
    """A model of this fixture's own, trained once; the tests using it only read it."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    config = flow_config(stack, stack.home / f"{name}.yaml", model_name=name)
    return train(stack, deployments, name, config)


def test_deploy_creates_every_deployment(deployments: dict[str, str]) -> None:
    assert set(deployments) == {
        "training/training",
        "training/retrain-on-drift",
        "drift/drift",
        "features/features",
        "rollout/rollout",
        "replay/replay",
    }


def test_cron_deployment_really_gets_scheduled_runs(stack: Stack, deployments: dict[str, str]) -> None:
    deadline = time.monotonic() + 150  # the scheduler service loops every 60 s by default
    scheduled: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not scheduled:
        scheduled = [r for r in runs_of(stack, deployments["drift/drift"]) if r["state"]["type"] == "SCHEDULED"]
        time.sleep(2)
    assert scheduled, "the cron deployment got no scheduled runs (a known failure mode with sqlalchemy 2.1)"
    times = sorted(r["expected_start_time"] for r in scheduled)
    assert {t[11:16] for t in times} <= {"06:00", "06:10"}  # the crons in prefect.yaml, one per problem
    configs = {(r["parameters"] or {}).get("config") for r in scheduled}
    assert "examples/dot2015/config.yaml" in configs  # the second problem's schedule carries its config


def test_on_demand_training_registers_a_champion(stack: Stack, own_model: Trained) -> None:
    c = registry(stack)
    assert c.get_registered_model(own_model.model).aliases == {"champion": "1", "challenger": "1"}
    assert c.get_model_version(own_model.model, "1").tags["evergreen.flow_run"] == own_model.flow_run["id"]


def test_a_calm_window_emits_no_drift_event_and_starts_no_training(
    stack: Stack, deployments: dict[str, str], own_model: Trained
) -> None:
    since = datetime.now(UTC)
    drift = run(stack, deployments["drift/drift"], {"config": str(own_model.config), "as_of": "2013-03-10"})
    assert drift["state"]["type"] == "COMPLETED", drift["state"]
    time.sleep(8)  # the server persists events in batches; several worker polls and trigger evaluations
    assert drift_events(stack, own_model.model, since) == []
    assert runs_of(stack, deployments["training/retrain-on-drift"], since) == []


def test_drift_storm_launches_exactly_one_retrain_that_registers_a_version(
    stack: Stack, deployments: dict[str, str], features: dict[str, Any]
) -> None:
    since = datetime.now(UTC)
    retrain_id = deployments["training/retrain-on-drift"]
    c = registry(stack)
    assert not c.search_model_versions(f"name='{WATCHED_MODEL}'"), (
        f"{WATCHED_MODEL} already has versions: only this test may train the model the trigger watches"
    )
    train(stack, deployments, WATCHED_MODEL, stack.config_file)
    assert c.get_registered_model(WATCHED_MODEL).aliases["champion"] == "1"

    drift = run(stack, deployments["drift/drift"], {"as_of": "2013-12-20"})  # the worker's default config
    assert drift["state"]["type"] == "COMPLETED", drift["state"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not drift_events(stack, WATCHED_MODEL, since):
        time.sleep(1)
    assert drift_events(stack, WATCHED_MODEL, since), "the drift flow emitted no drift event"
    emit_drift(stack, "2013-12-20T00:00:00+00:00", 19)  # the alert storm: 20 events within seconds

    # How soon Prefect's trigger creates the run is the server's business (seconds usually, minutes
    # when its database is busy): the test waits generously and asserts only that it comes, once.
    deadline = time.monotonic() + TRIGGER_WAIT
    while time.monotonic() < deadline and not runs_of(stack, retrain_id, since):
        time.sleep(1)
    runs = runs_of(stack, retrain_id, since)
    assert len(runs) >= 1, "the drift event did not start the retrain-on-drift deployment"
    done = wait(stack, runs[0]["id"], 420)
    assert done["state"]["type"] == "COMPLETED", done["state"]
    assert done["parameters"]["reason"] == "drift" and done["parameters"]["as_of"].startswith("2013-12-20")
    time.sleep(8)
    assert len(runs_of(stack, retrain_id, since)) == 1  # one retrain, not twenty

    (retrained,) = [
        v for v in c.search_model_versions(f"name='{WATCHED_MODEL}'") if v.tags.get("evergreen.flow_run") == done["id"]
    ]
    assert str(retrained.version) == "2"
    assert retrained.tags["evergreen.reason"] == "drift" and retrained.tags["evergreen.as_of"].startswith("2013-12-20")
    assert c.get_registered_model(WATCHED_MODEL).aliases["challenger"] == str(retrained.version)


def _process_of(flow_run_id: str) -> int | None:
    """The pid of the process executing a flow run (the worker passes the id in its environment)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                return int(environ.parent.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


def _heartbeats(stack: Stack, flow_run_id: str) -> int:
    body = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 10,
    }
    return len(api(stack, "POST", "/events/filter", json=body)["events"])


def test_killed_flow_runs_end_crashed_not_running_forever(
    stack: Stack, deployments: dict[str, str], features: dict[str, Any], tmp_path: Path
) -> None:
    """Two real SIGKILLs: a run's process under the worker (the worker marks it Crashed), and a run
    started from a shell whose machine 'vanished' (the heartbeat automation marks it Crashed)."""
    import os
    import signal
    import sys

    from deployments.stack import CRASH_AUTOMATION, ensure_crash_automation

    found = api(stack, "POST", "/automations/filter", json={"automations": {"name": {"any_": [CRASH_AUTOMATION]}}})
    assert len(found) == 1 and found[0]["trigger"]["within"] == 300  # `up` created it
    ensure_crash_automation(stack.config, within_seconds=40)  # Prefect's minimum beat is 30 s: wait less here

    config = flow_config(stack, tmp_path / "slow.yaml", model_name=f"e2e-crash-{uuid.uuid4().hex[:8]}")
    text = config.read_text().replace("n_trials: 3", "n_trials: 500")  # long enough to be killed mid-run
    config.write_text(text)
    by_worker = api(
        stack,
        "POST",
        f"/deployments/{deployments['training/training']}/create_flow_run",
        json={"parameters": {"config": str(config), "as_of": TRAIN_AS_OF}},
    )["id"]
    shell_env = {**stack.env(), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "PREFECT_HOME": str(tmp_path / "prefect")}
    since = datetime.now(UTC)
    from_shell = subprocess.Popen(
        [sys.executable, "-m", "flows.training", "--config", str(config), "--as-of", TRAIN_AS_OF],
        cwd=ROOT,
        env=shell_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        shell_run, worker_pid = None, None
        while time.monotonic() < deadline and (shell_run is None or worker_pid is None):
            running = api(
                stack, "POST", "/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
            )
            ours = [r for r in running if r["deployment_id"] is None and datetime.fromisoformat(r["created"]) >= since]
            if ours and _heartbeats(stack, ours[0]["id"]):
                shell_run = ours[0]["id"]
            if api(stack, "GET", f"/flow_runs/{by_worker}")["state"]["type"] == "RUNNING":
                worker_pid = _process_of(by_worker)
            time.sleep(1)
        assert shell_run and worker_pid, (shell_run, worker_pid)
    finally:
        from_shell.kill()  # SIGKILL: the whole "machine" of this run is gone, nothing reports for it
        from_shell.wait(timeout=60)
    os.kill(worker_pid, signal.SIGKILL)  # the worker survives and sees its child die

    assert wait(stack, by_worker, timeout=120)["state"]["type"] == "CRASHED"
    crashed = wait(stack, shell_run, timeout=240)
    assert crashed["state"]["type"] == "CRASHED"
    assert "No heartbeat for 40 s" in (crashed["state"]["message"] or "")
