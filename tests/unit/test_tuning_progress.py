"""Tuning progress: the first trial, at most one line per interval, and the last, on a real study;
and a search that ran out of time says so."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd

from evergreen.config import TuningConfig
from evergreen.features import EVENT_TIMESTAMP
from evergreen.training import TrainingSet, Windows, _progress_callback, tune


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


def synthetic_set(rows: int = 3000) -> TrainingSet:
    """A learnable two-feature problem over 60 days, its last 7 the tuner's validation part."""
    rng = np.random.default_rng(0)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    x = rng.normal(size=(rows, 2))
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            EVENT_TIMESTAMP: start + pd.to_timedelta(np.sort(rng.uniform(0, 60, rows)), unit="D"),
            "a": x[:, 0],
            "b": x[:, 1],
            "y": (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=rows) > 0).astype(int),
        }
    )
    windows = Windows(
        start, start + pd.Timedelta(days=60), start + pd.Timedelta(days=53), start + pd.Timedelta(days=67)
    )
    return TrainingSet(frame, frame.head(0), ["a", "b"], windows, "y", [], "synthetic")


def test_a_search_cut_short_by_its_time_budget_says_so(tmp_path):
    cfg = TuningConfig(n_trials=50, timeout_seconds=0.01, max_boost_rounds=50, threads=1)
    result, _ = tune(synthetic_set(), cfg, f"sqlite:///{tmp_path / 'optuna.db'}", "cut-short")
    assert result.stopped_at_time_budget and result.n_trials < 50 and result.trials_run == result.n_trials
    line = result.summary(cfg.timeout_seconds)
    assert f"{result.n_trials}/50 trials" in line and "stopped at the 0.01 s time budget" in line


def test_a_search_that_finishes_its_budget_is_not_reported_short(tmp_path):
    cfg = TuningConfig(n_trials=3, timeout_seconds=600, max_boost_rounds=50, threads=1)
    result, _ = tune(synthetic_set(), cfg, f"sqlite:///{tmp_path / 'optuna.db'}", "full")
    assert not result.stopped_at_time_budget and result.n_trials == 3 and result.n_failed == 0
    assert "time budget" not in result.summary(cfg.timeout_seconds)
