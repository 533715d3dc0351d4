"""Tuning and training stage: Optuna search, final fit, and one MLflow run holding everything."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from evergreen import tracking
from evergreen.config import EvergreenConfig
from evergreen.training import TuningResult, Windows, fit_rows, train_final, tune
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


def _study_charts(study: Any, history: list[dict[str, Any]]) -> dict[str, str]:
    """The tuning's pictures as SVG: every trial with the best so far, and fANOVA parameter importances."""
    from evergreen.charts import history_chart, importance_chart

    charts = {"optuna_history.svg": history_chart(history)}
    if sum(h["state"] == "COMPLETE" for h in history) >= 2:
        import optuna

        charts["optuna_param_importances.svg"] = importance_chart(optuna.importance.get_param_importances(study))
    return charts


@dataclass
class LoggedModel:
    run_id: str
    model_uri: str
    holdout_scores: np.ndarray


@task(name="log-training-run", cache_policy=NONE)
def log_run(
    cfg: EvergreenConfig,
    *,
    booster: Any,
    categories: dict[str, list[str]],
    final_params: dict[str, Any],
    tuning: TuningResult,
    study: Any,
    columns: list[str],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    windows: Windows,
    tags: dict[str, str],
    validation_reports: list[Path],
) -> LoggedModel:
    """One MLflow run: params, metrics, lineage tags, plots, reference profile and the model."""
    import mlflow

    from evergreen.features import to_model_frame
    from evergreen.model import save_model_files  # imports mlflow.pyfunc: not at flow import time

    experiment_id = tracking.setup(cfg.tracking_uri, cfg.registry.experiment, cfg.artifact_root)
    holdout_scores = np.asarray(booster.predict(to_model_frame(holdout, columns, categories)), dtype="float64")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{tags['evergreen.as_of'][:10]}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params(
            {
                **{f"lgb.{k}": v for k, v in final_params.items() if k != "metric"},
                "train_rows": len(train),
                "holdout_rows": len(holdout),
                "tuning.n_trials": tuning.n_trials,
                "tuning.study": tuning.study_name,
                **{f"window.{k}": v for k, v in windows.as_dict().items()},
            }
        )
        mlflow.log_metrics(
            {
                "tuning.best_valid_auc": tuning.best_value,
                "tuning.pruned": tuning.n_pruned,
                "train.label_rate": float(train["delayed"].mean()),
            }
        )
        for name, svg in _study_charts(study, tuning.history).items():
            mlflow.log_text(svg, f"tuning/{name}")
        mlflow.log_table(pd.DataFrame(tuning.history), "tuning/trials.json")
        for report in validation_reports:
            mlflow.log_artifact(str(report), "validation")
        # Reference for drift checks: a fixed-seed sample of training features with scores, and a
        # profile computed once here so later checks cost only the current window.
        n = min(cfg.registry.reference_sample_rows, len(train))
        idx = np.sort(np.random.default_rng(0).choice(len(train), n, replace=False))
        sample = train.iloc[idx][["event_timestamp", *columns, "delayed"]].reset_index(drop=True)
        sample["score"] = booster.predict(to_model_frame(sample, columns, categories))
        with tempfile.TemporaryDirectory() as tmp:
            ref = Path(tmp) / "reference_sample.parquet"
            sample.to_parquet(ref, index=False)
            mlflow.log_artifact(str(ref), "reference")
            # Feature profile on the whole window; the score profile on the scored sample.
            tracking.log_json(
                tracking.reference_profile(train, columns, sample["score"].to_numpy()), "reference/profile.json"
            )
            files = save_model_files(booster, columns, categories, Path(tmp) / "model_files")
            example = holdout[columns].head(50)
            model_uri = tracking.log_model(files, example, holdout_scores[:50], cfg.registry.model_name)
    return LoggedModel(run.info.run_id, model_uri, holdout_scores)
