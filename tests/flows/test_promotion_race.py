"""Two training runs racing to promote: gate-and-promote is one step per model across processes, so
the run that gates second gates against the champion the first one promoted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_config
from tests.flows.conftest import SMALL

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

# Any challenger passes this gate, so two racers gating against the same champion would both promote.
PERMISSIVE = {
    **SMALL["gate"],
    "floors": {"roc_auc": 0.5, "pr_auc": 0.0, "log_loss": 5.0, "brier": 1.0},
    "min_improvement": -1.0,
    "max_secondary_regression": {"pr_auc": 1.0, "log_loss": 1.0, "brier": 1.0},
    "max_slice_regression": 1.0,
}


def test_two_racing_runs_gate_one_after_the_other(env, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from flows.training import training

    example = env["example"]
    registry = {**SMALL["registry"], "model_name": "race-model", "experiment": "race"}
    path = write_config(
        tmp_path / "race.yaml", env["cfg"].home, "flights", **{**SMALL, "registry": registry, "gate": PERMISSIVE}
    )
    first = training(config=str(path), as_of=example.first_as_of)
    assert first["champion"] == "1"

    # Two processes started together, as the training and retrain-on-drift deployments would be,
    # reporting to the same Prefect server (the test harness's).
    process_env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "flows.training", "--config", str(path), "--as-of", example.second_as_of]
    racers = [
        subprocess.Popen([*command, "--n-trials", str(n)], cwd=ROOT, env=process_env, stdout=subprocess.PIPE, text=True)
        for n in (1, 2)
    ]
    outputs = [r.communicate(timeout=900)[0] for r in racers]
    assert [r.returncode for r in racers] == [0, 0], outputs
    results = [json.loads(out[out.index("{") :]) for out in outputs]
    decisions = [json.loads(Path(r["decision_record"]).read_text()) for r in results]
    assert all(d["passed"] for d in decisions)
    # One gated against v1 and promoted; the other waited and gated against that new champion.
    by_champion = {d["champion_version"]: r["version"] for d, r in zip(decisions, results, strict=True)}
    assert set(by_champion) == {"1", by_champion["1"]}, by_champion
    from evergreen import registry as reg

    client = reg.client(env["cfg"].tracking_uri)
    assert reg.alias_version(client, "race-model", "champion") == by_champion[by_champion["1"]]
    assert reg.alias_version(client, "race-model", "previous_champion") == by_champion["1"]
