"""Drift stage: the champion's own reference, the current window, the decision, the report, the event."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from evergreen import registry
from evergreen.config import EvergreenConfig
from tasks.common import markdown_artifact, table_artifact

DRIFT_EVENT = "evergreen.drift.detected"
NOT_FEATURES = {"event_timestamp", "delayed", "score"}


@dataclass
class Champion:
    version: str
    run_id: str
    as_of: pd.Timestamp | None
    reference: pd.DataFrame
    features: list[str]
    model: Any


def model_resource_id(model_name: str) -> str:
    return f"evergreen.model.{model_name}"


@task(name="load-champion-reference", cache_policy=NONE, retries=1, retry_delay_seconds=2)
def load_champion(cfg: EvergreenConfig) -> Champion | None:
    """The champion model and the reference sample logged with it at training time (None: no champion)."""
    import warnings

    import mlflow

    c = registry.client(cfg.tracking_uri)
    name = cfg.registry.model_name
    version = registry.alias_version(c, name, registry.CHAMPION)
    if version is None:
        return None
    mv = c.get_model_version(name, version)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    path = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="reference/reference_sample.parquet")
    reference = pd.read_parquet(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hint.*")
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    as_of = mv.tags.get("evergreen.as_of")
    features = [col for col in reference.columns if col not in NOT_FEATURES]
    return Champion(version, mv.run_id, pd.Timestamp(as_of) if as_of else None, reference, features, model)


def last_retrain_as_of(cfg: EvergreenConfig) -> pd.Timestamp | None:
    """The data time of the most recent training run that registered a version (passed gate or not)."""
    c = registry.client(cfg.tracking_uri)
    stamps = [
        pd.Timestamp(v.tags["evergreen.as_of"])
        for v in c.search_model_versions(f"name='{cfg.registry.model_name}'")
        if "evergreen.as_of" in v.tags
    ]
    return max(stamps) if stamps else None


@task(name="score-current-window", cache_policy=NONE)
def score_current(champion: Champion, current: pd.DataFrame) -> np.ndarray:
    missing = [c for c in champion.features if c not in current.columns]
    if missing:
        raise ValueError(f"the current window lacks feature column(s) {missing} that champion v{champion.version} uses")
    return np.asarray(champion.model.predict(current[champion.features]), dtype="float64")


@task(name="detect-drift", cache_policy=NONE)
def decide_drift(cfg: EvergreenConfig, champion: Champion, current: pd.DataFrame, scores: np.ndarray) -> Any:
    from evergreen.drift import detect_drift

    return detect_drift(
        champion.reference,
        current,
        champion.features,
        cfg.drift,
        reference_scores=champion.reference["score"].to_numpy(),
        current_scores=scores,
    )


@task(name="render-evidently-report", cache_policy=NONE)
def render_report(cfg: EvergreenConfig, champion: Champion, current: pd.DataFrame, html_path: Path) -> dict[str, Any]:
    from evergreen.drift import evidently_report

    html_path.parent.mkdir(parents=True, exist_ok=True)
    return evidently_report(
        champion.reference, current, champion.features, cfg.drift, html_path, sample_rows=cfg.drift.report_sample_rows
    )


def publish(summary: dict[str, Any], table: list[dict[str, Any]], html_path: Path | None) -> None:
    """The decision, its reasons and the per-feature table as Prefect artifacts."""
    lines = [f"# Drift: **{summary['status'].upper()}**", ""]
    lines += [f"- {r}" for r in summary["reasons"]]
    if summary.get("window"):
        w = summary["window"]
        lines += [
            "",
            f"Window `{w['start']}` .. `{w['end']}`, {summary.get('rows', 0)} flights; "
            f"champion v{summary.get('champion_version')}.",
        ]
    if html_path is not None:
        lines += ["", f"Evidently report: [{html_path.name}]({html_path.as_uri()}) (`{html_path}`)"]
    markdown_artifact("\n".join(lines), "drift-decision", f"Drift decision: {summary['status']}")
    if table:
        table_artifact(table, "drift-features", "Per-feature drift (KS for numeric, PSI for categorical)")
