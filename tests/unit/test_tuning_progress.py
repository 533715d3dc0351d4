"""Tuning progress: the first trial, at most one line per interval, and the last, on a real study."""

from __future__ import annotations

import optuna

from evergreen.training import _progress_callback


def run(budget: int, every_seconds: float) -> list[str]:
    lines: list[str] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: t.suggest_float("x", 0, 1),
        n_trials=budget,
        callbacks=[_progress_callback(lines.append, budget, every_seconds)],
    )
    return lines


def test_a_long_interval_reports_only_the_first_and_the_last_trial():
    lines = run(12, every_seconds=3600)
    assert [line.split(":")[0] for line in lines] == ["trial 1/12", "trial 12/12"]
    assert "best valid AUC" in lines[-1]


def test_no_interval_reports_every_trial():
    lines = run(5, every_seconds=0)
    assert [line.split(":")[0] for line in lines] == [f"trial {i}/5" for i in range(1, 6)]
