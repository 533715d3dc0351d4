"""Parallel tuners on one study (real Prefect engine, real Optuna storage): distinct parameters, an
exact budget, and the study and the experiment's artifacts where the config's URLs say."""

from __future__ import annotations

import mlflow
import optuna
import pytest

from evergreen.config import load_config
from tests.conftest import write_config
from tests.flows.conftest import SMALL

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

BUDGET = 7  # not a multiple of the tuners: the shares are 4 and 3


def assert_one_study_ran_exactly_its_budget(
    storage: str, result: dict, study_name: str | None = None
) -> optuna.study.StudySummary:
    """Two tuners, BUDGET trials: no trial more, every one finished, shares 3 and 4, no repeats. The
    storage holds that one study, or ``study_name`` names it among others."""
    summaries = optuna.get_all_study_summaries(storage)
    (summary,) = summaries if study_name is None else [s for s in summaries if s.study_name == study_name]
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert len(trials) == BUDGET  # not one trial more: each tuner ran exactly its share
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    by_tuner = sorted(sum(t.user_attrs["tuner"] == i for t in trials) for i in (0, 1))
    assert by_tuner == [3, 4]
    params = {tuple(sorted(t.params.items())) for t in trials}
    assert len(params) == BUDGET  # own sampler seeds: no tuner repeats another's parameters
    assert result["tuning_trials"] == BUDGET
    return summary


def test_two_tuners_share_one_study_and_run_exactly_its_budget(env, tmp_path):
    from flows.training import training

    storage = f"sqlite:///{tmp_path / 'shared' / 'study.db'}"
    (tmp_path / "shared").mkdir()
    artifacts = (tmp_path / "bucket").as_uri()
    tuning = {**SMALL["tuning"], "n_trials": BUDGET, "workers": 2, "storage": storage, "threads": 2}
    registry = {
        **SMALL["registry"],
        "model_name": "parallel-model",
        "experiment": "parallel",
        "artifact_location": artifacts,
    }
    path = write_config(
        tmp_path / "c.yaml", env["cfg"].home, "flights", **{**SMALL, "tuning": tuning, "registry": registry}
    )

    result = training(config=str(path), as_of=env["example"].first_as_of, reason="manual")

    summary = assert_one_study_ran_exactly_its_budget(storage, result)
    # The home's default study database is untouched: the URL was used.
    home_db = env["cfg"].home / "optuna.db"
    if home_db.exists():
        assert not [
            s for s in optuna.get_all_study_summaries(f"sqlite:///{home_db}") if s.study_name == summary.study_name
        ]

    cfg = load_config(path)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.info.artifact_uri.startswith(artifacts)
    assert (tmp_path / "bucket").is_dir() and any((tmp_path / "bucket").rglob("MLmodel"))
