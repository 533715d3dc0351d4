"""Tuning and training stage: Optuna search, final fit, and one MLflow run holding everything
(logged by the tracking process)."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from evergreen import tracking_jobs
from evergreen.config import EvergreenConfig
from evergreen.training import TuningResult, Windows, fit_rows, train_final, tune
from evergreen.worker import WorkerProcess
from tasks.common import table_artifact


@task(name="tune-hyperparameters", cache_policy=NONE)
def tune_model(
    cfg: EvergreenConfig,
    train: pd.DataFrame,
    columns: list[str],
    windows: Windows,
    study_name: str,
    n_trials: int | None,
) -> tuple[TuningResult, Any]:
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    result, study = tune(
        train,
        columns,
        cfg.tuning,
        windows.validation_start,
        cfg.optuna_storage,
        study_name,
        n_trials,
        progress=logger.info,
    )
    table_artifact(
        [{"trial": h["number"], "state": h["state"], "valid_auc": h["value"]} for h in result.history],
        "tuning-trials",
        f"Optuna study {study_name}: best valid AUC {result.best_value:.4f}",
    )
    return result, study


@task(name="train-final-model", cache_policy=NONE)
def train_model(
    cfg: EvergreenConfig, train: pd.DataFrame, columns: list[str], tuning: TuningResult, windows: Windows
) -> tuple[Any, dict[str, list[str]], dict[str, Any]]:
    return train_final(train, columns, cfg.tuning, tuning, fit_rows(train, windows.validation_start))


@dataclass
class PendingLog:
    """A training run being logged by the tracking process: its holdout scores (computed here, for
    the gate) and the future of (run id, model URI)."""

    holdout_scores: np.ndarray
    future: Future[tuple[str, str]]

    def result(self) -> LoggedModel:
        run_id, model_uri = self.future.result()
        return LoggedModel(run_id, model_uri, self.holdout_scores)


@dataclass
class LoggedModel:
    run_id: str
    model_uri: str
    holdout_scores: np.ndarray


@task(name="log-training-run", cache_policy=NONE)
def log_run(
    cfg: EvergreenConfig,
    tracker: WorkerProcess,
    *,
    booster: Any,
    categories: dict[str, list[str]],
    final_params: dict[str, Any],
    tuning: TuningResult,
    columns: list[str],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    windows: Windows,
    tags: dict[str, str],
    validation_reports: list[Path],
) -> PendingLog:
    """Score the holdout and hand the run to the tracking process: one MLflow run with params,
    metrics, lineage tags, tuning figures, reference sample and profile, and the model. Returns at
    once; the gate waits for the run before it writes its record."""
    from evergreen.features import to_model_frame

    holdout_scores = np.asarray(booster.predict(to_model_frame(holdout, columns, categories)), dtype="float64")
    future = tracker.submit(
        tracking_jobs.log_training_run,
        cfg.tracking_uri,
        cfg.registry.experiment,
        cfg.artifact_root,
        cfg.registry.model_name,
        model_string=booster.model_to_string(),
        categories=categories,
        columns=columns,
        params={
            **{f"lgb.{k}": v for k, v in final_params.items() if k != "metric"},
            "train_rows": len(train),
            "holdout_rows": len(holdout),
            "tuning.n_trials": tuning.n_trials,
            "tuning.study": tuning.study_name,
            **{f"window.{k}": v for k, v in windows.as_dict().items()},
        },
        metrics={
            "tuning.best_valid_auc": tuning.best_value,
            "tuning.pruned": tuning.n_pruned,
            "train.label_rate": float(train["delayed"].mean()),
        },
        tags=tags,
        trials_table=tuning.history,
        validation_reports=validation_reports,
        example=holdout[columns].head(50),
        example_scores=holdout_scores[:50],
        reference_rows=cfg.registry.reference_sample_rows,
        run_name=f"train-{tags['evergreen.as_of'][:10]}",
    )
    return PendingLog(holdout_scores, future)
