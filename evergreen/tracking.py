"""MLflow tracking for a training run: batched params/metrics, lineage tags, model and references.

Batched on purpose: one ``log_params``/``log_metrics`` call each (a single metric call costs ≈14 ms),
and ``pip_requirements`` given explicitly (inferring them costs seconds per model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.models import infer_signature

from evergreen.config import EvergreenConfig
from evergreen.gate import GateDecision
from evergreen.model import BoosterModel
from evergreen.plots import plot_gate
from evergreen.training import TuningResult, Windows

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ROOT = Path(__file__).resolve().parent.parent
MODEL_PACKAGES = ("lightgbm", "pandas", "numpy", "scikit-learn", "mlflow", "pyarrow")


@dataclass
class LoggedModel:
    """A training run's model in MLflow, with its scores on the holdout for the gate."""

    run_id: str
    model_uri: str
    holdout_scores: np.ndarray


def setup(tracking_uri: str, experiment: str, artifact_location: str | None) -> str:
    """Point MLflow at the store and return the experiment id (created in ``artifact_location``,
    or where the tracking server keeps artifacts when None)."""

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return str(mlflow.create_experiment(experiment, artifact_location=artifact_location))
    return str(exp.experiment_id)


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"


def frame_fingerprint(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]


def pip_requirements() -> list[str]:
    return [f"{p}=={version(p)}" for p in MODEL_PACKAGES]


def reference_profile(frame: pd.DataFrame, columns: list[str], scores: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Per-feature reference for drift checks, computed once at training time: decile edges and
    bin shares for numeric columns, category shares for the rest, and the score distribution."""
    profile: dict[str, Any] = {"rows": int(len(frame)), "features": {}}
    for col in [*columns, "__score__"]:
        s = pd.Series(scores, name=col) if col == "__score__" else frame[col]  # scores may be a sample
        if col != "__score__" and (
            s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s)
        ):
            shares = s.astype(str).value_counts(normalize=True)
            profile["features"][col] = {"kind": "categorical", "shares": {str(k): float(v) for k, v in shares.items()}}
            continue
        x = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64")
        valid = x[~np.isnan(x)]
        edges = np.unique(np.quantile(valid, np.linspace(0, 1, bins + 1))) if len(valid) else np.array([])
        counts = np.histogram(valid, bins=edges)[0] if len(edges) > 1 else np.array([len(valid)])
        profile["features"][col] = {
            "kind": "numeric",
            "edges": edges.tolist(),
            "shares": (counts / max(len(valid), 1)).tolist(),
            "null_share": float(np.isnan(x).mean()) if len(x) else 0.0,
            "mean": float(valid.mean()) if len(valid) else None,
        }
    return profile


def lineage_tags(
    cfg: EvergreenConfig, windows: Windows, data_fingerprint: str, raw_fingerprint: str, reason: str, flow_run: str
) -> dict[str, str]:
    """What a model was made from: code, config, lock, data window and content, and why it was trained."""
    return {
        "evergreen.git_sha": git_sha(),
        "evergreen.config_hash": cfg.digest,
        "evergreen.lock_hash": file_hash(ROOT / "uv.lock"),
        "evergreen.data_window": f"{windows.start.isoformat()}/{windows.end.isoformat()}",
        "evergreen.data_fingerprint": data_fingerprint,
        "evergreen.raw_fingerprint": raw_fingerprint,
        "evergreen.feature_service": cfg.features.feature_service,
        "evergreen.as_of": windows.end.isoformat(),
        "evergreen.reason": reason,
        "evergreen.flow_run": flow_run,
    }


def log_metrics(tracking_uri: str, run_id: str, values: dict[str, float], step: int = 0) -> None:
    """Log many metrics to a finished or running run in one batched call."""

    now = int(time.time() * 1000)
    MlflowClient(tracking_uri).log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])


def log_tuning(tracking_uri: str, run_id: str, tuning: TuningResult, study: optuna.Study) -> None:
    """The search as MLflow shows it natively: each trial's validation AUC and the best so far as step
    metrics (step = trial number), the trials as a table, and Optuna's own plots of the history and
    of the fANOVA parameter importances."""
    import matplotlib.pyplot as plt  # Optuna's plots draw through pyplot

    now = int(time.time() * 1000)
    metrics, best = [], float("-inf")
    for t in tuning.history:
        if t["state"] == "COMPLETE" and t["value"] is not None:
            best = max(best, float(t["value"]))
            metrics += [
                Metric("tuning.trial_valid_auc", float(t["value"]), now, t["number"]),
                Metric("tuning.best_valid_auc_so_far", best, now, t["number"]),
            ]
    c = MlflowClient(tracking_uri)
    c.log_batch(run_id, metrics=metrics)
    c.log_table(run_id, pd.DataFrame(tuning.history), "tuning/trials.json")
    plots: dict[str, Callable[[optuna.Study], Axes]] = {
        "optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history
    }
    if sum(t["state"] == "COMPLETE" for t in tuning.history) >= 2:  # fANOVA needs two completed trials
        plots["param_importances.png"] = optuna.visualization.matplotlib.plot_param_importances
    with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in plots.items():
            figure = plot(study).get_figure(root=True)
            assert figure is not None
            c.log_figure(run_id, figure, f"tuning/{name}")
            plt.close(figure)


def log_gate_decision(cfg: EvergreenConfig, d: GateDecision, run_id: str, holdout_window: dict[str, str]) -> Path:
    """The gate's one decision record: JSON and its picture under ``reports/gate/``, the same in the
    MLflow run (``gate/decision.json``, ``gate/decision.png``) with its figures as run metrics."""

    d.holdout_window = holdout_window
    record = json.loads(
        json.dumps({**d.as_dict(), "mlflow_run_id": run_id, "model_name": cfg.registry.model_name}, default=str)
    )
    path = cfg.reports_dir / "gate" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    figure = plot_gate(d, cfg.gate.max_slice_regression)
    figure.savefig(path.with_suffix(".png"), dpi=100)
    c = MlflowClient(cfg.tracking_uri)
    c.log_dict(run_id, record, "gate/decision.json")
    c.log_figure(run_id, figure, "gate/decision.png")
    log_metrics(cfg.tracking_uri, run_id, gate_metrics(d))
    return path


def gate_metrics(d: GateDecision) -> dict[str, float]:
    out = {f"holdout.{k}": v for k, v in d.challenger.items()}
    if d.champion:
        out |= {f"holdout.champion.{k}": v for k, v in d.champion.items()}
    if d.auc_diff:
        out |= {f"gate.auc_diff.{k}": float(d.auc_diff[k]) for k in ("mean", "lower", "upper")}
    out["gate.passed"] = float(d.passed)
    return out


def log_json(obj: Any, artifact_file: str) -> None:

    mlflow.log_dict(json.loads(json.dumps(obj, default=str)), artifact_file)


def log_model(artifacts: dict[str, str], example: pd.DataFrame, predictions: np.ndarray, model_name: str) -> str:
    """Log the pyfunc model with signature and explicit requirements; returns its model URI."""

    # Integer request fields are declared as doubles: a missing value at serving time is then valid.
    ints = [c for c in example.columns if pd.api.types.is_integer_dtype(example[c])]
    signature = infer_signature(example.astype(dict.fromkeys(ints, "float64")), predictions)
    # The signature is given explicitly, and the class is ours: the advice MLflow logs for anonymous
    # models (add an input example, beware of pickled objects) does not apply.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("mlflow.utils.uv_utils").setLevel(logging.WARNING)
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=BoosterModel(),
            artifacts=artifacts,
            signature=signature,
            pip_requirements=pip_requirements(),
            code_paths=[str(ROOT / "evergreen")],
        )
    return str(info.model_uri)


# --- links and drift checks ------------------------------------------------------------------------------


def ui_base(cfg: EvergreenConfig) -> str:
    """Where a browser opens the MLflow UI: ``registry.ui_url``, else the tracking server itself,
    else the address ``mlflow ui`` serves by default over a local store."""
    if cfg.registry.ui_url:
        return cfg.registry.ui_url.rstrip("/")
    if cfg.tracking_uri.startswith(("http://", "https://")):
        return cfg.tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def run_url(base: str, experiment_id: str, run_id: str, artifact_path: str | None = None) -> str:
    """The MLflow UI's page of a run, or of one of its artifacts (the UI renders HTML artifacts)."""
    url = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{url}/artifactPath/{artifact_path}" if artifact_path else url


def log_drift_check(
    cfg: EvergreenConfig, run_name: str, tags: dict[str, str], metrics: dict[str, float], texts: dict[str, str]
) -> dict[str, str]:
    """One finished MLflow run per drift check, in the model's experiment: tags, metrics and the
    files (``{artifact path: text}``). Returns its id, experiment and UI link."""
    experiment_id = setup(cfg.tracking_uri, cfg.registry.experiment, cfg.artifact_location)
    c = MlflowClient(cfg.tracking_uri)
    run_id = c.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    status = "FAILED"
    try:
        log_metrics(cfg.tracking_uri, run_id, metrics)
        for path, text in texts.items():
            c.log_text(run_id, text, path)
        status = "FINISHED"
    finally:
        c.set_terminated(run_id, status)
    return {"run_id": run_id, "experiment_id": experiment_id, "url": run_url(ui_base(cfg), experiment_id, run_id)}
