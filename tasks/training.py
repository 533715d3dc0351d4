"""Training stages: the point-in-time training set, the Optuna search, the final fit, one MLflow run."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from evergreen import feature_store, tracking
from evergreen.config import EvergreenConfig
from evergreen.features import EVENT_TIMESTAMP, model_columns
from evergreen.model import save_model_files
from evergreen.tracking import LoggedModel
from evergreen.training import (
    TrainedModel,
    TrainingSet,
    TuningPlan,
    TuningResult,
    Windows,
    plan_tuning,
    run_tuner,
    summarise_tuning,
    train_final,
    tune,
)
from tasks.common import table_artifact, talks_to_tracking


@task(name="retrieve-training-set", cache_policy=NONE)
def retrieve_training_set(cfg: EvergreenConfig, prepared: pd.DataFrame, windows: Windows) -> TrainingSet:
    """The training and holdout rows of ``windows`` with every feature as it was known at prediction time."""
    frame = feature_store.features_for(cfg, prepared, windows.start, windows.end)
    columns = model_columns(cfg.problem.request_features, feature_store.feature_names(cfg))
    return TrainingSet.from_frame(frame, windows, columns, cfg.problem)


@task(name="tune-hyperparameters", cache_policy=NONE)
def tune_model(cfg: EvergreenConfig, data: TrainingSet, n_trials: int | None) -> tuple[TuningResult, optuna.Study]:
    """The search: one tuner here, or ``tuning.workers`` tuner task runs on one shared study, each
    with its own seed and share of the budget, on the flow's task runner."""
    study_name = data.study_name(cfg.registry.model_name, cfg.digest)
    logger = get_run_logger()
    if cfg.tuning.workers == 1:
        result, study = tune(data, cfg.tuning, cfg.optuna_storage, study_name, n_trials, progress=logger.info)
    else:
        plan = plan_tuning(cfg.optuna_storage, study_name, cfg.tuning, n_trials)
        logger.info(
            "tuning: %d of %d trials left, %d tuners with shares %s",
            plan.remaining,
            plan.budget,
            len(plan.shares),
            list(plan.shares),
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        runs = [run_tuner_share.submit(cfg, data, plan, i) for i in range(len(plan.shares))]
        for run in runs:
            run.result()
        seconds = round(time.perf_counter() - started, 3)
        cpu = round(time.process_time() - cpu_started, 3)
        result, study = summarise_tuning(cfg.optuna_storage, cfg.tuning, plan, seconds, cpu)
    # A search cut short by its time budget, or a dead tuner's trial, is said where people look.
    short = result.stopped_at_time_budget or result.n_failed
    log = logger.warning if short else logger.info
    log("tuning: %s", result.summary(cfg.tuning.timeout_seconds))
    table_artifact(
        [{"trial": h["number"], "state": h["state"], "valid_auc": h["value"]} for h in result.history],
        "tuning-trials",
        f"Optuna study {study_name}: best valid AUC {result.best_value:.4f}",
    )
    return result, study


@task(name="run-tuner", cache_policy=NONE, task_run_name="run-tuner-{tuner}")
def run_tuner_share(cfg: EvergreenConfig, data: TrainingSet, plan: TuningPlan, tuner: int) -> None:
    run_tuner(data, cfg.tuning, cfg.optuna_storage, plan, tuner, progress=get_run_logger().info)


@task(name="train-final-model", cache_policy=NONE)
def train_model(cfg: EvergreenConfig, data: TrainingSet, tuning: TuningResult) -> TrainedModel:
    return train_final(data, cfg.tuning, tuning)


@task(name="log-training-run", cache_policy=NONE)
@talks_to_tracking
def log_run(
    cfg: EvergreenConfig,
    data: TrainingSet,
    model: TrainedModel,
    tuning: TuningResult,
    study: optuna.Study,
    tags: dict[str, str],
    validation_reports: list[Path],
) -> LoggedModel:
    """One MLflow run: params, metrics, lineage tags, the search, reference sample and profile, the model."""
    train, holdout = data.train, data.holdout
    experiment_id = tracking.setup(cfg.tracking_uri, cfg.registry.experiment, cfg.artifact_location)
    holdout_scores = model.predict(holdout)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{tags['evergreen.as_of'][:10]}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params(
            {
                **{f"lgb.{k}": v for k, v in model.params.items() if k != "metric"},
                "train_rows": len(train),
                "holdout_rows": len(holdout),
                "tuning.n_trials": tuning.n_trials,
                "tuning.study": tuning.study_name,
                **{f"window.{k}": v for k, v in data.windows.as_dict().items()},
            }
        )
        mlflow.log_metrics(
            {
                "tuning.best_valid_auc": tuning.best_value,
                "tuning.pruned": tuning.n_pruned,
                "tuning.failed": tuning.n_failed,
                "tuning.stopped_at_time_budget": float(tuning.stopped_at_time_budget),
                "train.label_rate": float(train[data.label].mean()),
            }
        )
        tracking.log_tuning(cfg.tracking_uri, run.info.run_id, tuning, study)
        for report in validation_reports:
            mlflow.log_artifact(str(report), "validation")
        # Reference for drift checks: a fixed-seed sample of training features with scores, and a
        # profile of the whole window computed once here, so later checks cost only the current window.
        n = min(cfg.registry.reference_sample_rows, len(train))
        idx = np.sort(np.random.default_rng(0).choice(len(train), n, replace=False))
        sample = train.iloc[idx][[EVENT_TIMESTAMP, *data.columns, data.label]].reset_index(drop=True)
        sample["score"] = model.predict(sample)
        with tempfile.TemporaryDirectory() as tmp:
            ref = Path(tmp) / "reference_sample.parquet"
            sample.to_parquet(ref, index=False)
            mlflow.log_artifact(str(ref), "reference")
            tracking.log_json(
                tracking.reference_profile(train, data.columns, sample["score"].to_numpy()), "reference/profile.json"
            )
            files = save_model_files(model.booster, data.columns, model.categories, Path(tmp) / "model_files")
            example = holdout[data.columns].head(50)
            model_uri = tracking.log_model(files, example, holdout_scores[:50], cfg.registry.model_name)
    return LoggedModel(run.info.run_id, model_uri, holdout_scores)
