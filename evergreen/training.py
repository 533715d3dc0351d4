"""Time windows, Optuna tuning and the final deterministic LightGBM fit.

Windows (all ending at ``as_of``, nothing known after it is used):

    [as_of - holdout - train_days, as_of - holdout)  training  (its last validation_days tune)
    [as_of - holdout, as_of)                         out-of-time holdout for the gate

A request enters a window by its prediction time, and only if its outcome was known by ``as_of``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
from optuna_integration.lightgbm import LightGBMPruningCallback

from evergreen.config import ProblemConfig, TuningConfig, WindowConfig
from evergreen.features import EVENT_TIMESTAMP, KNOWN_AT, learn_categories, to_model_frame


@dataclass(frozen=True)
class Windows:
    start: pd.Timestamp
    holdout_start: pd.Timestamp
    validation_start: pd.Timestamp
    end: pd.Timestamp

    def as_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in vars(self).items()}


def batch_range(windows: Windows, spec: ProblemConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The raw rows a run on ``windows`` reads, to validate before anything is trained: its windows
    and the feature lookback before them, [lo, hi)."""
    return windows.start - spec.lookback, windows.end


def plan_windows(as_of: pd.Timestamp, window: WindowConfig) -> Windows:
    holdout_start = as_of - pd.Timedelta(days=window.holdout_days)
    return Windows(
        start=holdout_start - pd.Timedelta(days=window.train_days),
        holdout_start=holdout_start,
        validation_start=holdout_start - pd.Timedelta(days=window.validation_days),
        end=as_of,
    )


def split_frame(frame: pd.DataFrame, w: Windows) -> tuple[pd.DataFrame, pd.DataFrame]:
    known = frame[KNOWN_AT] <= w.end
    ts = frame[EVENT_TIMESTAMP]
    train = frame[known & (ts >= w.start) & (ts < w.holdout_start)].reset_index(drop=True)
    holdout = frame[known & (ts >= w.holdout_start) & (ts < w.end)].reset_index(drop=True)
    return train, holdout


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a frame's values: the same rows give the same study and lineage tag."""
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]


@dataclass
class TrainingSet:
    """What one training run learns from and is judged on."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    columns: list[str]
    windows: Windows
    label: str
    categorical: list[str]
    fingerprint: str  # of the training rows' ids, labels and features

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, windows: Windows, columns: list[str], spec: ProblemConfig) -> TrainingSet:
        train, holdout = split_frame(frame, windows)
        rows = train[[spec.entity_id, spec.label, *columns]]
        categorical = [c for c in columns if c in spec.categorical]
        return cls(train, holdout, columns, windows, spec.label, categorical, frame_fingerprint(rows))

    @property
    def frame(self) -> pd.DataFrame:
        """Training and holdout rows together, as retrieved."""
        return pd.concat([self.train, self.holdout], ignore_index=True)

    def study_name(self, model_name: str, config_digest: str) -> str:
        """The Optuna study of this exact data and config: a rerun resumes it, anything else starts anew."""
        return f"{model_name}-{self.windows.end:%Y%m%dT%H%M}-{config_digest[:8]}-{self.fingerprint[:8]}"


def threads(cfg: TuningConfig) -> int:
    return cfg.threads or os.cpu_count() or 1


def base_params(cfg: TuningConfig) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": ["auc", "binary_logloss"],
        "verbosity": -1,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads(cfg),
        "feature_pre_filter": False,
    }


@dataclass
class TuningResult:
    best_params: dict[str, Any]
    best_iteration: int
    best_value: float
    n_trials: int  # finished trials (complete or pruned): what counts toward the budget
    n_pruned: int
    study_name: str
    budget: int = 0
    n_failed: int = 0  # trials of a tuner that died (or raised), never counted as done
    trials_run: int = 0  # finished by this call; the rest were in the study already
    stopped_at_time_budget: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    search_seconds: float = 0.0  # wall time of the trials run by this call (0 when none were left to run)
    search_cpu_seconds: float = 0.0  # CPU time of the process (every thread) over those trials

    def summary(self, timeout_seconds: float) -> str:
        """One line on what the search did, saying so when it ran out of time before its budget."""
        line = f"{self.n_trials}/{self.budget} trials ({self.n_pruned} pruned), best valid AUC {self.best_value:.4f}"
        if self.n_failed:
            line += f"; {self.n_failed} failed trial(s) not counted (a tuner that died or raised)"
        if self.stopped_at_time_budget:
            line += (
                f"; stopped at the {timeout_seconds:g} s time budget after {self.trials_run} trial(s) in this run: "
                "the search is short of its budget, so raise tuning.timeout_seconds or lower tuning.n_trials"
            )
        return line


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 15, 255, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 300, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "bagging_freq": 1,
        "lambda_l1": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
        "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 50.0, log=True),
    }


def study_storage(url: str, heartbeat_seconds: int) -> optuna.storages.RDBStorage:
    """The study's database, with heartbeats: a trial whose process was killed stops beating, and
    after two silent intervals Optuna marks it failed instead of leaving it running forever."""
    with warnings.catch_warnings():  # heartbeats are marked experimental since Optuna 2.9; their use is documented
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_seconds, grace_period=2 * heartbeat_seconds)


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@dataclass(frozen=True)
class TuningPlan:
    """What is left of a study's trial budget, split into one share per tuner.

    Shares make the budget exact however many tuners run at once: each tuner runs exactly its
    share, so no two can both take "the last" trial (a shared stop condition such as Optuna's
    MaxTrialsCallback is checked after a trial ends and overshoots by up to tuners - 1)."""

    study_name: str
    budget: int
    done: int
    shares: tuple[int, ...]

    @property
    def remaining(self) -> int:
        return sum(self.shares)


def open_study(storage: str, study_name: str, cfg: TuningConfig, seed: int) -> optuna.Study:
    """The persistent study, created on first use; every tuner opens it with its own sampler seed
    so parallel tuners do not propose the same parameters."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=study_name,
        storage=study_storage(storage, cfg.heartbeat_seconds),
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=30),
    )


def plan_tuning(
    storage: str, study_name: str, cfg: TuningConfig, n_trials: int | None = None, workers: int | None = None
) -> TuningPlan:
    """Create the study once (its schema too, before any tuner starts), fail a dead run's trials,
    and split what is left of the budget between ``workers`` (default ``cfg.workers``) tuners."""
    study = open_study(storage, study_name, cfg, cfg.seed)
    fail_stale_trials(study)  # before counting: a dead run's trial is not done
    budget = n_trials if n_trials is not None else cfg.n_trials
    done = _finished(study)
    remaining = max(budget - done, 0)
    workers = min(workers or cfg.workers, remaining) or 1
    shares = tuple(remaining // workers + (i < remaining % workers) for i in range(workers))
    return TuningPlan(study_name, budget, done, shares)


def run_tuner(
    data: TrainingSet,
    cfg: TuningConfig,
    storage: str,
    plan: TuningPlan,
    tuner: int,
    progress: Callable[[str], None] | None = None,
    own_cores: bool = False,
) -> None:
    """Run tuner ``tuner``'s share of the plan: TPE search with median pruning on a time split of the
    training window. Each tuner builds its own datasets, as it would on another machine. The plan's
    tuners share this machine's cores unless ``own_cores`` (one tuner per Dask worker)."""
    n = plan.shares[tuner]
    if not n:
        return
    train, columns, label = data.train, data.columns, data.label
    fit = train[train[EVENT_TIMESTAMP] < data.windows.validation_start]
    valid = train[train[EVENT_TIMESTAMP] >= data.windows.validation_start]
    if len(fit) == 0 or len(valid) == 0 or valid[label].nunique() < 2:
        raise ValueError(
            f"tuning needs both a fit and a validation part with both classes; got {len(fit)} fit and "
            f"{len(valid)} validation rows: widen window.train_days or window.validation_days"
        )
    categories = learn_categories(fit, columns, data.categorical)
    # Tuners x LightGBM threads never exceeds the cores (oversubscription is many times slower).
    sharing = 1 if own_cores else len(plan.shares)
    params0 = {**base_params(cfg), "num_threads": max(1, threads(cfg) // sharing)}
    ran_by = f"{socket.gethostname()}/{os.getpid()}"  # which machine and process, when tuners are spread
    # Built once and shared by every trial of this tuner: binning does not depend on the searched parameters.
    dfit = lgb.Dataset(
        to_model_frame(fit, columns, categories),
        fit[label],
        free_raw_data=False,
        params={"feature_pre_filter": False, "verbosity": -1},
    )
    dvalid = lgb.Dataset(to_model_frame(valid, columns, categories), valid[label], reference=dfit, free_raw_data=False)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("tuner", tuner)
        trial.set_user_attr("host", ran_by)
        params = {**params0, **suggest_params(trial)}
        booster = lgb.train(
            params,
            dfit,
            num_boost_round=cfg.max_boost_rounds,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(cfg.early_stopping_rounds, verbose=False),
                LightGBMPruningCallback(trial, "auc", valid_name="valid", report_interval=cfg.report_interval),
            ],
        )
        trial.set_user_attr("best_iteration", int(booster.best_iteration or booster.current_iteration()))
        return float(booster.best_score["valid"]["auc"])

    study = open_study(storage, plan.study_name, cfg, cfg.seed + tuner)
    callbacks = [_progress_callback(progress, plan.budget)] if progress else []
    # One trial at a time per tuner (n_jobs=1), each with its share of the cores.
    study.optimize(
        objective, n_trials=n, timeout=cfg.timeout_seconds, n_jobs=1, gc_after_trial=False, callbacks=callbacks
    )


def summarise_tuning(
    storage: str, cfg: TuningConfig, plan: TuningPlan, search_seconds: float, search_cpu_seconds: float
) -> tuple[TuningResult, optuna.Study]:
    """The study after its tuners: best trial, counts, and whether time ran out before the budget."""
    study = open_study(storage, plan.study_name, cfg, cfg.seed)
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        raise RuntimeError(f"Optuna study '{plan.study_name}' has no completed trial; raise tuning.timeout_seconds")
    best = study.best_trial
    finished = _finished(study)
    history = [
        {"number": t.number, "state": t.state.name, "value": t.value, "host": t.user_attrs.get("host"), **t.params}
        for t in trials
    ]
    result = TuningResult(
        best_params={**best.params, "bagging_freq": 1},
        best_iteration=int(best.user_attrs.get("best_iteration", 100)),
        best_value=float(best.value or 0.0),
        n_trials=finished,
        n_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        study_name=plan.study_name,
        budget=plan.budget,
        n_failed=sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        trials_run=finished - plan.done,
        # Optuna checks its timeout between trials: short of the budget after the timeout means it stopped there.
        stopped_at_time_budget=finished < plan.budget and search_seconds >= cfg.timeout_seconds,
        history=history,
        search_seconds=search_seconds,
        search_cpu_seconds=search_cpu_seconds,
    )
    return result, study


def tune(
    data: TrainingSet,
    cfg: TuningConfig,
    storage: str,
    study_name: str,
    n_trials: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[TuningResult, optuna.Study]:
    """The whole search as one tuner in this process (parallel tuners are the tasks layer's: it runs
    ``run_tuner`` per share as Prefect work); the study persists in ``storage`` so an interrupted run
    resumes where it stopped (same name, same data).

    The budget counts finished trials only (complete or pruned): a trial left behind by a killed
    process is failed once its heartbeat is stale and is run again, not counted."""
    plan = plan_tuning(storage, study_name, cfg, n_trials, workers=1)
    started, cpu_started = time.perf_counter(), time.process_time()
    run_tuner(data, cfg, storage, plan, 0, progress)
    if not plan.remaining and progress:
        progress(f"study {study_name} already holds {plan.done} finished trials: resuming with none to run")
    seconds = round(time.perf_counter() - started, 3) if plan.remaining else 0.0
    cpu = round(time.process_time() - cpu_started, 3) if plan.remaining else 0.0
    return summarise_tuning(storage, cfg, plan, seconds, cpu)


PROGRESS_EVERY_SECONDS = 15.0


def _progress_callback(
    progress: Callable[[str], None], budget: int, every_seconds: float = PROGRESS_EVERY_SECONDS
) -> Callable[[Any, Any], None]:
    """A progress line for the first trial, then at most one every ``every_seconds``, and the last:
    each line is a log record the flow ships to its server, and a best-value query on the study."""
    last = [float("-inf")]

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        now = time.monotonic()
        if 0 < trial.number < budget - 1 and now - last[0] < every_seconds:
            return
        last[0] = now
        try:
            best = f"{study.best_value:.4f}"
        except ValueError:  # no completed trial yet
            best = "-"
        value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
        progress(f"trial {trial.number + 1}/{budget}: {value} (best valid AUC {best})")

    return report


@dataclass
class TrainedModel:
    """The final booster with the column order and category vocabulary its input needs."""

    booster: lgb.Booster
    columns: list[str]
    categories: dict[str, list[str]]
    params: dict[str, Any]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.booster.predict(to_model_frame(frame, self.columns, self.categories)), dtype="float64")


def train_final(data: TrainingSet, cfg: TuningConfig, tuning: TuningResult) -> TrainedModel:
    """Deterministic fit on the whole training window with the tuned parameters.

    Rounds scale with the data: the early-stopped count found on the tuner's fit rows grows in
    proportion to the larger training set.
    """
    train, columns = data.train, data.columns
    categories = learn_categories(train, columns, data.categorical)
    params = {**base_params(cfg), **tuning.best_params}
    rounds = max(10, int(round(tuning.best_iteration * len(train) / max(fit_rows(data), 1))))
    dataset = lgb.Dataset(
        to_model_frame(train, columns, categories),
        train[data.label],
        params={"feature_pre_filter": False, "verbosity": -1},
    )
    booster = lgb.train(params, dataset, num_boost_round=rounds)
    return TrainedModel(booster, columns, categories, {**params, "num_boost_round": rounds})


def fit_rows(data: TrainingSet) -> int:
    return int((data.train[EVENT_TIMESTAMP] < data.windows.validation_start).sum())
