"""MLflow tracking for a training run: batched params/metrics, lineage tags, model and references.

Batched on purpose: one ``log_params``/``log_metrics`` call each (a single metric call costs ≈14 ms),
and ``pip_requirements`` given explicitly (inferring them costs seconds per model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MODEL_PACKAGES = ("lightgbm", "pandas", "numpy", "scikit-learn", "mlflow", "pyarrow")


def setup(tracking_uri: str, experiment: str, artifact_root: Path) -> str:
    """Point MLflow at the store and return the experiment id (created with a local artifact root)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        location = artifact_root.as_uri() if "://" not in str(artifact_root) else str(artifact_root)
        return str(mlflow.create_experiment(experiment, artifact_location=location))
    return str(exp.experiment_id)


def warm_up(tracking_uri: str, experiment: str, artifact_root: Path) -> None:
    """Pay MLflow's first-use costs ahead of time: open the tracking store (schema check, migrations
    on a new file) and build the map of installed distributions that ``log_model`` checks explicit
    requirements against. Each costs about a second the first time in a process."""
    setup(tracking_uri, experiment, artifact_root)
    from mlflow.utils import requirements_utils

    # Private but stable since MLflow 2: the map is cached at module level once built.
    requirements_utils._init_modules_to_packages_map()  # type: ignore[no-untyped-call]


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


def log_metrics(tracking_uri: str, run_id: str, values: dict[str, float]) -> None:
    """Log many metrics to a finished or running run in one batched call."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    MlflowClient(tracking_uri).log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])


def log_json(obj: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_dict(json.loads(json.dumps(obj, default=str)), artifact_file)


def log_model(artifacts: dict[str, str], example: pd.DataFrame, predictions: np.ndarray, model_name: str) -> str:
    """Log the pyfunc model with signature and explicit requirements; returns its model URI."""
    import mlflow
    from mlflow.models import infer_signature

    from evergreen.model import FlightDelayModel

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
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=FlightDelayModel(),
            artifacts=artifacts,
            signature=signature,
            pip_requirements=pip_requirements(),
            code_paths=[str(ROOT / "evergreen")],
        )
    return str(info.model_uri)
