"""A stopped MLflow tracking server (really stopped, not simulated): the training run ends with one
line naming the server and what to do, exit code 3, no traceback, and nothing registered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from tests.conftest import ROOT, free_port, running_mlflow_server, write_config
from tests.flows.conftest import SMALL

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

MODEL = "tracking-down-model"


def training_command(config, as_of: str) -> list[str]:
    return [sys.executable, "-m", "flows.training", "--config", str(config), "--as-of", as_of]


def process_env(tmp_path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_HOME": str(tmp_path)}


def assert_one_line_error(run: subprocess.CompletedProcess, url: str, consequence: str) -> None:
    assert run.returncode == 3, run.stderr[-3000:]
    assert f"error: the MLflow tracking server at {url} does not answer" in run.stderr
    assert consequence in run.stderr and "deployments.stack up" in run.stderr
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


@pytest.mark.parametrize("flow", ["training", "drift"])
def test_a_run_against_a_stopped_server_fails_before_any_work(env, tmp_path, flow):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    registry = {**SMALL["registry"], "model_name": MODEL, "tracking_uri": url}
    path = write_config(tmp_path / "c.yaml", env["cfg"].home, "flights", **{**SMALL, "registry": registry})
    run = subprocess.run(
        [sys.executable, "-m", f"flows.{flow}", "--config", str(path), "--as-of", env["example"].first_as_of],
        cwd=ROOT,
        env=process_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(run, url, "the run did nothing")
    assert "stage load" not in run.stderr  # stopped before loading data


def test_a_server_stopped_during_tuning_fails_the_run_in_one_line_and_registers_nothing(env, tmp_path):
    from mlflow import MlflowClient

    store = tmp_path / "mlflow"
    with running_mlflow_server(store, free_port()) as (url, server):
        registry = {**SMALL["registry"], "model_name": MODEL, "experiment": "tracking-down", "tracking_uri": url}
        # Tuning runs for its whole 30 s time budget (more trials than fit in it), so the server is
        # killed while the run tunes, before it logs anything, however loaded the machine.
        tuning = {**SMALL["tuning"], "n_trials": 500, "timeout_seconds": 30, "max_boost_rounds": 400}
        path = write_config(
            tmp_path / "c.yaml", env["cfg"].home, "flights", **{**SMALL, "registry": registry, "tuning": tuning}
        )
        storage = f"sqlite:///{env['cfg'].home / 'optuna.db'}"
        run = subprocess.Popen(
            training_command(path, env["example"].first_as_of),
            cwd=ROOT,
            env=process_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and run.poll() is None:
            studies = [s for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith(MODEL)]
            if studies and studies[0].n_trials >= 1:
                break
            time.sleep(0.5)
        assert run.poll() is None, run.communicate()[1][-3000:]
        # Killed, as a crash or a lost machine would: a graceful stop waits for the run's open
        # keep-alive connection, which the run would go on using.
        os.killpg(server.pid, signal.SIGKILL)
        stopped = time.monotonic()
        stdout, stderr = run.communicate(timeout=600)
        print(f"the run ended {time.monotonic() - stopped:.1f} s after the server stopped")
    completed = subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)
    assert_one_line_error(completed, url, "the run stopped at its first call after that")
    assert not stdout.strip() or "{" not in stdout  # no result printed
    # The server's own store, read directly: no registered model, no version.
    # Both URIs named: an earlier flow run in this process set a global registry URI.
    db = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=db, registry_uri=db)
    assert client.search_registered_models() == []
