"""A training process killed mid-tuning (a real SIGKILL): its running trial is failed once its heartbeat
is stale, the rerun resumes the study, and only finished trials count toward the budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from tests.conftest import ROOT, write_config
from tests.flows.conftest import SMALL

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

HEARTBEAT = 1  # seconds; a trial silent for two beats is stale
# Trials long enough (every boosting round, no early stop) that a kill lands inside one.
SLOW_TRIALS = {
    **SMALL["tuning"],
    "n_trials": 40,
    "max_boost_rounds": 400,
    "early_stopping_rounds": 400,
    "heartbeat_seconds": HEARTBEAT,
    "threads": 1,
}


def trials(storage: str, model_name: str) -> list[optuna.trial.FrozenTrial]:
    names = [s.study_name for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith(model_name)]
    return optuna.load_study(study_name=names[0], storage=storage).get_trials() if names else []


def test_a_killed_run_leaves_no_trial_running_and_the_rerun_counts_only_finished_ones(env, tmp_path):
    from prefect.settings import PREFECT_API_URL

    example = env["example"]
    registry = {**SMALL["registry"], "model_name": "killed-model", "experiment": "killed"}
    path = write_config(
        tmp_path / "killed.yaml", env["cfg"].home, "flights", **{**SMALL, "registry": registry, "tuning": SLOW_TRIALS}
    )
    storage = f"sqlite:///{env['cfg'].home / 'optuna.db'}"
    process_env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "flows.training", "--config", str(path), "--as-of", example.first_as_of]

    victim = subprocess.Popen(command, cwd=ROOT, env=process_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and victim.poll() is None:
            states = [t.state for t in trials(storage, "killed-model")]
            if states.count(optuna.trial.TrialState.COMPLETE) >= 2 and states[-1] == optuna.trial.TrialState.RUNNING:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"tuning never got going: {victim.stderr.read().decode()[-2000:] if victim.stderr else ''}")
    finally:
        victim.kill()  # SIGKILL: no handler, no cleanup, as an OOM kill or a lost machine
        victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    left = trials(storage, "killed-model")
    assert left[-1].state == optuna.trial.TrialState.RUNNING  # what the dead process left behind
    finished = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in left)

    time.sleep(2 * HEARTBEAT + 1)  # past the grace period: the trial's heartbeat is stale
    budget = finished + 2
    rerun = subprocess.run(
        [*command, "--n-trials", str(budget)], cwd=ROOT, env=process_env, capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout[rerun.stdout.index("{") :])

    after = trials(storage, "killed-model")
    by_number = {t.number: t.state for t in after}
    assert by_number[left[-1].number] == optuna.trial.TrialState.FAIL  # the dead trial, failed, not resumed
    assert optuna.trial.TrialState.RUNNING not in by_number.values()
    assert result["tuning_trials"] == budget  # the budget counts finished trials only
    assert sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in by_number.values()) == (
        budget
    )
    assert f"{budget}/{budget} trials" in result["tuning"] and "1 failed trial(s) not counted" in result["tuning"]
    assert "failed trial(s) not counted" in rerun.stderr  # and said in the run's log
