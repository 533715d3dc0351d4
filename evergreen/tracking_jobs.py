"""The training run's MLflow work, as jobs for a tracking process (:class:`evergreen.worker.WorkerProcess`).

The training flow sends these to a low-priority process started with the flow: MLflow's and
matplotlib's imports, opening the store, the champion's scoring, the reference profile and the
tuning figures then use CPU the flow leaves idle, and only logging the model, the gate record and
the registry change stay on the flow's path. Each is also a plain function: called in-process it
does the same thing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evergreen import registry, tracking
from evergreen.gate import GateDecision
from evergreen.worker import keep, kept

TRAIN = "train"
FEATURE_PROFILE = "feature_profile"
FIGURES = "figures"


def warm(tracking_uri: str, experiment: str, artifact_root: Path) -> None:
    """Imports and first-use costs, paid before the flow needs them: MLflow (store, schema check,
    installed-packages map), matplotlib and Optuna's plots, LightGBM."""
    tracking.warm_up(tracking_uri, experiment, artifact_root)
    import matplotlib

    matplotlib.use("Agg")
    import lightgbm  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import optuna.visualization.matplotlib  # noqa: F401

    import evergreen.model  # noqa: F401 - the pyfunc class logged with the model
    import evergreen.report  # noqa: F401


def keep_training_frame(train: pd.DataFrame, columns: list[str]) -> None:
    """Keep the training rows for the reference sample, and profile the features now (the whole window)."""
    keep(TRAIN, train)
    keep(FEATURE_PROFILE, tracking.feature_profile(train, columns))


def champion_scores(tracking_uri: str, model_name: str, holdout: pd.DataFrame) -> tuple[str | None, np.ndarray | None]:
    """The current champion's scores on the holdout, or (None, None) when there is no champion."""
    import mlflow

    c = registry.client(tracking_uri)
    version = registry.alias_version(c, model_name, registry.CHAMPION)
    if version is None:
        return None, None
    mlflow.set_tracking_uri(tracking_uri)
    with warnings.catch_warnings():  # MLflow asks for predict() type hints; the signature covers the schema
        warnings.filterwarnings("ignore", message=".*type hint.*")
        model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    schema = model.metadata.get_input_schema()
    inputs = holdout[schema.input_names()] if schema is not None else holdout
    return version, np.asarray(model.predict(inputs), dtype="float64")


def study_figures(trials: list[Any], direction: Any) -> None:
    """Render the optimisation history and parameter importances (PNG files kept for the run's log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    study = optuna.create_study(direction=direction)  # an in-memory copy of the finished study
    study.add_trials(trials)
    folder = Path(tempfile.mkdtemp(prefix="evergreen-figures-"))
    figs: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is flagged experimental
        figs["optuna_history.png"] = ovm.plot_optimization_history(study).figure
        if sum(t.state.name == "COMPLETE" for t in trials) >= 2:
            figs["optuna_param_importances.png"] = ovm.plot_param_importances(study).figure
    paths = []
    for name, fig in figs.items():
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        paths.append(folder / name)
    keep(FIGURES, paths)


def log_training_run(
    tracking_uri: str,
    experiment: str,
    artifact_root: Path,
    model_name: str,
    *,
    model_string: str,
    categories: dict[str, list[str]],
    columns: list[str],
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    trials_table: list[dict[str, Any]],
    validation_reports: list[Path],
    example: pd.DataFrame,
    example_scores: np.ndarray,
    reference_rows: int,
    run_name: str,
) -> tuple[str, str]:
    """One MLflow run: params, metrics, lineage tags, figures, reference sample and profile, and the
    model. Uses the training frame, profile and figures kept by the earlier jobs. Returns (run id, model URI)."""
    import lightgbm as lgb
    import mlflow

    from evergreen.features import to_model_frame
    from evergreen.model import save_model_files

    booster = lgb.Booster(model_str=model_string)
    train: pd.DataFrame = kept(TRAIN)
    experiment_id = tracking.setup(tracking_uri, experiment, artifact_root)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags(tags)
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        figures: list[Path] = kept(FIGURES)
        for path in figures:
            mlflow.log_artifact(str(path), "tuning")
        for folder in {p.parent for p in figures}:
            shutil.rmtree(folder, ignore_errors=True)
        mlflow.log_table(pd.DataFrame(trials_table), "tuning/trials.json")
        for report in validation_reports:
            mlflow.log_artifact(str(report), "validation")
        # Reference for drift checks: a fixed-seed sample of training features with scores, and a
        # profile computed once here so later checks cost only the current window.
        n = min(reference_rows, len(train))
        idx = np.sort(np.random.default_rng(0).choice(len(train), n, replace=False))
        sample = train.iloc[idx][["event_timestamp", *columns, "delayed"]].reset_index(drop=True)
        sample["score"] = booster.predict(to_model_frame(sample, columns, categories))
        with tempfile.TemporaryDirectory() as tmp:
            ref = Path(tmp) / "reference_sample.parquet"
            sample.to_parquet(ref, index=False)
            mlflow.log_artifact(str(ref), "reference")
            # Feature profile on the whole window; the score profile on the scored sample.
            profile = tracking.with_score_profile(kept(FEATURE_PROFILE), sample["score"].to_numpy())
            tracking.log_json(profile, "reference/profile.json")
            files = save_model_files(booster, columns, categories, Path(tmp) / "model_files")
            model_uri = tracking.log_model(files, example, example_scores, model_name)
    return run.info.run_id, model_uri


def log_gate(
    tracking_uri: str,
    run_id: str,
    record: dict[str, Any],
    decision: GateDecision,
    max_slice_regression: float,
    picture: Path,
) -> None:
    """The decision record and its picture on the run (``gate/decision.json``, ``gate/decision.png``)
    and the gate's metrics; the picture is also written to ``picture``, beside the record file."""
    import matplotlib.pyplot as plt

    from evergreen.report import plot_gate

    c = registry.client(tracking_uri)
    c.log_dict(run_id, json.loads(json.dumps(record, default=str)), "gate/decision.json")
    tracking.log_metrics(tracking_uri, run_id, gate_metrics(decision))
    fig = plot_gate(decision, max_slice_regression)
    fig.savefig(picture, dpi=100)  # rendered once (0.18 s), then the file is logged as gate/decision.png
    plt.close(fig)
    with tempfile.TemporaryDirectory() as tmp:
        named = Path(tmp) / "decision.png"
        shutil.copyfile(picture, named)
        c.log_artifact(run_id, str(named), "gate")


def gate_metrics(d: GateDecision) -> dict[str, float]:
    out = {f"holdout.{k}": v for k, v in d.challenger.items()}
    if d.champion:
        out |= {f"holdout.champion.{k}": v for k, v in d.champion.items()}
    if d.auc_diff:
        out |= {f"gate.auc_diff.{k}": float(d.auc_diff[k]) for k in ("mean", "lower", "upper")}
    out["gate.passed"] = float(d.passed)
    return out


def register_and_promote(
    tracking_uri: str,
    name: str,
    model_uri: str,
    run_id: str,
    decision: GateDecision,
    lineage: dict[str, str],
    reason: str,
    flow_run: str | None,
    promote: bool = True,
) -> dict[str, str | None]:
    """Create the version with its gate tags, point ``challenger`` at it and, on pass, ``champion``
    (unless ``promote`` is false: then a canary rollout decides).

    The version is created and tagged before any alias moves; alias moves are applied as one
    change (restored on failure), so a crash leaves the aliases as they were.
    """
    c = registry.client(tracking_uri)
    tags = {
        **lineage,
        "evergreen.gate.verdict": decision.verdict,
        "evergreen.gate.summary": "; ".join(decision.reasons)[:4900],
        "evergreen.gate.champion_version": decision.champion_version or "none",
        "evergreen.gate.roc_auc": f"{decision.challenger['roc_auc']:.5f}",
    }
    if decision.auc_diff:
        tags["evergreen.gate.auc_diff_ci"] = f"[{decision.auc_diff['lower']:+.5f}, {decision.auc_diff['upper']:+.5f}]"
    version = registry.register(c, name, model_uri, run_id, tags)
    why = f"{reason}: gate {decision.verdict} (run {run_id})"
    moves: list[tuple[str, str | None]] = [(registry.CHALLENGER, version)]
    old = registry.alias_version(c, name, registry.CHAMPION)
    if decision.passed and promote:
        if old is not None and old != version:
            moves.append((registry.PREVIOUS, old))
        moves.append((registry.CHAMPION, version))
    registry.move_aliases(c, name, moves, why, flow_run)
    return {
        "version": version,
        "champion": registry.alias_version(c, name, registry.CHAMPION),
        "previous_champion": old,
    }
