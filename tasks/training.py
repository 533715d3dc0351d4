"""Training stages: the point-in-time training set, the Optuna search, the final fit, one MLflow run."""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from prefect import task
from prefect.cache_policies import NONE
from prefect.futures import PrefectFuture
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
)
from tasks.common import table_artifact, talks_to_tracking


@task(name="retrieve-training-set", cache_policy=NONE)
def retrieve_training_set(cfg: EvergreenConfig, prepared: pd.DataFrame, windows: Windows) -> TrainingSet:
    """The training and holdout rows of ``windows`` with every feature as it was known at prediction time."""
    frame = feature_store.features_for(cfg, prepared, windows.start, windows.end)
    columns = model_columns(cfg.problem.request_features, feature_store.feature_names(cfg))
    return TrainingSet.from_frame(frame, windows, columns, cfg.problem)


def tune_model(cfg: EvergreenConfig, data: TrainingSet, n_trials: int | None) -> tuple[TuningResult, optuna.Study]:
    """The search, as task runs of the flow: plan the study's budget, run one tuner per share
    (``tuning.workers``: on threads here, or on the Dask cluster at ``tuning.dask_address``), then
    summarise. Not a task itself: a tuner sent to Dask carries its parent task's parameters along,
    and those would be the whole training set again."""
    plan = plan_search(cfg, data, n_trials)
    started, cpu_started = time.perf_counter(), time.process_time()
    if plan.remaining:
        run_tuners(cfg, data, plan)
    seconds = round(time.perf_counter() - started, 3) if plan.remaining else 0.0
    cpu = round(time.process_time() - cpu_started, 3) if plan.remaining else 0.0
    return summarise_search(cfg, plan, seconds, cpu)


@task(name="plan-tuning", cache_policy=NONE)
def plan_search(cfg: EvergreenConfig, data: TrainingSet, n_trials: int | None) -> TuningPlan:
    """Create the study once (before any tuner opens it) and split what is left of its budget."""
    plan = plan_tuning(cfg.optuna_storage, data.study_name(cfg.registry.model_name, cfg.digest), cfg.tuning, n_trials)
    where = f"the Dask cluster at {cfg.tuning.dask_address}" if cfg.tuning.dask_address else "this run's process"
    if plan.remaining:
        get_run_logger().info(
            "tuning: %d of %d trials left, %d tuner(s) with shares %s on %s",
            *(plan.remaining, plan.budget, len(plan.shares), list(plan.shares), where),
        )
    else:
        get_run_logger().info(
            "study %s already holds %d finished trials: resuming with none to run", plan.study_name, plan.done
        )
    return plan


@task(name="summarise-tuning", cache_policy=NONE)
def summarise_search(
    cfg: EvergreenConfig, plan: TuningPlan, seconds: float, cpu: float
) -> tuple[TuningResult, optuna.Study]:
    result, study = summarise_tuning(cfg.optuna_storage, cfg.tuning, plan, seconds, cpu)
    # A search cut short by its time budget, or a dead tuner's trial, is said where people look.
    short = result.stopped_at_time_budget or result.n_failed
    log = get_run_logger().warning if short else get_run_logger().info
    log("tuning: %s", result.summary(cfg.tuning.timeout_seconds))
    table_artifact(
        [
            {"trial": h["number"], "state": h["state"], "valid_auc": h["value"], "host": h["host"]}
            for h in result.history
        ],
        "tuning-trials",
        f"Optuna study {plan.study_name}: best valid AUC {result.best_value:.4f}",
    )
    return result, study


def run_tuners(cfg: EvergreenConfig, data: TrainingSet, plan: TuningPlan) -> None:
    """One tuner task run per share of the plan, all at once: on Prefect's Dask task runner on the
    cluster at ``tuning.dask_address`` (reported like any task run; the tuners need only the study's
    database), else on the flow's task runner: threads of this run's process."""
    tuners = range(len(plan.shares))
    address = cfg.tuning.dask_address
    if not address:
        wait([run_tuner_share.submit(cfg, data, plan, i) for i in tuners])  # the flow's thread pool
        return
    from prefect_dask.task_runners import DaskTaskRunner

    with ExitStack() as stack:
        try:
            runner = stack.enter_context(DaskTaskRunner(address=address))
            client = runner.client  # connects on first use
        except OSError as e:
            raise RuntimeError(
                f"cannot reach the Dask scheduler at {address} (tuning.dask_address, EVERGREEN_DASK_ADDRESS): "
                f"{e}. Start it (`dask scheduler`, then `dask worker <address> --nthreads 1` per tuner) or "
                "leave the setting empty to tune in this run's process."
            ) from e
        shipped = client.scatter(data)  # the training set goes to the cluster once, not once per tuner
        wait([runner.submit(run_tuner_share, tuner_parameters(cfg, shipped, plan, i)) for i in tuners])


def tuner_parameters(cfg: EvergreenConfig, data: Any, plan: TuningPlan, tuner: int) -> dict[str, Any]:
    return {"cfg": cfg, "data": data, "plan": plan, "tuner": tuner}


def wait(runs: list[PrefectFuture[None]]) -> None:
    for run in runs:
        run.result()  # raises the first tuner's error


@task(name="run-tuner", cache_policy=NONE, task_run_name="run-tuner-{tuner}")
def run_tuner_share(cfg: EvergreenConfig, data: TrainingSet, plan: TuningPlan, tuner: int) -> None:
    run_tuner(
        data,
        cfg.tuning,
        cfg.optuna_storage,
        plan,
        tuner,
        progress=get_run_logger().info,
        own_cores=bool(cfg.tuning.dask_address),
    )


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
