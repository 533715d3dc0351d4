"""Deployments for real: `prefect deploy --all` against the local stack (Prefect server, process
worker, MLflow server on free 127.0.0.1 ports, temp home), runs through the worker, the drift event
and its trigger. Flow runs read the small config the `stack` fixture exports as EVERGREEN_CONFIG."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT

MODEL = "evergreen-flight-delay"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def api(stack: Any, method: str, path: str, **kw: Any) -> Any:
    """One API call; a 503 (the SQLite-backed server busy under load) is retried as Prefect's own
    client retries it, with backoff, before it counts as a failure."""
    for attempt in range(6):
        r = httpx.request(method, f"{stack.prefect_api_url}{path}", timeout=30, **kw)
        if r.status_code != 503:
            break
        time.sleep(0.5 * 2**attempt)
    r.raise_for_status()
    return r.json() if r.content else None


def runs_of(stack: Any, deployment_id: str) -> list[dict]:
    return api(stack, "POST", "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}})


def run(stack: Any, deployment_id: str, params: dict[str, Any], timeout: float = 420) -> dict:
    """Run a deployment through the worker and wait for a final state (like `prefect deployment run --watch`)."""
    fr = api(stack, "POST", f"/deployments/{deployment_id}/create_flow_run", json={"parameters": params})
    return wait(stack, fr["id"], timeout)


def wait(stack: Any, flow_run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fr = api(stack, "GET", f"/flow_runs/{flow_run_id}")
        if fr["state"]["type"] in FINAL:
            return fr
        time.sleep(1)
    pytest.fail(f"flow run {flow_run_id} did not finish in {timeout} s (last state {fr['state']['type']})")


def emit_drift(stack: Any, as_of: str, n: int) -> None:
    """What an external alert (Alertmanager relay, operator with curl) sends: the same event."""
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "id": str(uuid.uuid4()),
            "occurred": now,
            "event": "evergreen.drift.detected",
            "resource": {"prefect.resource.id": f"evergreen.model.{MODEL}"},
            "payload": {"as_of": as_of, "source": "test-alert-storm"},
        }
        for _ in range(n)
    ]
    api(stack, "POST", "/events", json=events)


@pytest.fixture(scope="module")
def deployments(stack) -> dict[str, str]:
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


def test_deploy_creates_every_deployment(deployments):
    assert set(deployments) == {
        "training/training",
        "training/retrain-on-drift",
        "drift/drift",
        "features/features",
        "rollout/rollout",
        "replay/replay",
    }


def test_cron_deployment_really_gets_scheduled_runs(stack, deployments):
    deadline = time.monotonic() + 150  # the scheduler service loops every 60 s by default
    scheduled: list[dict] = []
    while time.monotonic() < deadline and not scheduled:
        scheduled = [r for r in runs_of(stack, deployments["drift/drift"]) if r["state"]["type"] == "SCHEDULED"]
        time.sleep(2)
    assert scheduled, "the cron deployment got no scheduled runs (a known failure mode with sqlalchemy 2.1)"
    times = sorted(r["expected_start_time"] for r in scheduled)
    assert all(t[11:16] == "06:00" for t in times)  # the cron in prefect.yaml


@pytest.fixture(scope="module")
def champion(stack, deployments) -> dict:
    features = run(stack, deployments["features/features"], {})
    assert features["state"]["type"] == "COMPLETED", features["state"]
    trained = run(stack, deployments["training/training"], {"as_of": "2013-04-01"})
    assert trained["state"]["type"] == "COMPLETED", trained["state"]
    return trained


def _registry(stack) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)


def test_on_demand_training_registers_a_champion(stack, champion):
    c = _registry(stack)
    assert c.get_registered_model(MODEL).aliases == {"champion": "1", "challenger": "1"}
    assert c.get_model_version(MODEL, "1").tags["evergreen.flow_run"] == champion["id"]


def test_a_calm_window_starts_no_training(stack, deployments, champion):
    drift = run(stack, deployments["drift/drift"], {"as_of": "2013-03-10"})
    assert drift["state"]["type"] == "COMPLETED", drift["state"]
    time.sleep(8)  # several worker polls and trigger evaluations
    assert runs_of(stack, deployments["training/retrain-on-drift"]) == []


def test_drift_storm_launches_exactly_one_retrain_that_registers_a_version(stack, deployments, champion):
    retrain_id = deployments["training/retrain-on-drift"]
    drift = run(stack, deployments["drift/drift"], {"as_of": "2013-12-20"})
    assert drift["state"]["type"] == "COMPLETED", drift["state"]
    emit_drift(stack, "2013-12-20T00:00:00+00:00", 19)  # the alert storm: 20 events within seconds
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not runs_of(stack, retrain_id):
        time.sleep(1)
    runs = runs_of(stack, retrain_id)
    assert len(runs) >= 1, "the drift event did not start the retrain-on-drift deployment"
    done = wait(stack, runs[0]["id"], 420)
    assert done["state"]["type"] == "COMPLETED", done["state"]
    assert done["parameters"]["reason"] == "drift" and done["parameters"]["as_of"].startswith("2013-12-20")
    time.sleep(8)
    assert len(runs_of(stack, retrain_id)) == 1  # one retrain, not twenty
    c = _registry(stack)
    v2 = c.get_model_version(MODEL, "2")
    assert v2.tags["evergreen.reason"] == "drift" and v2.tags["evergreen.as_of"].startswith("2013-12-20")
    assert c.get_registered_model(MODEL).aliases["challenger"] == "2"
