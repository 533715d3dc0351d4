"""Drift stage: the champion's own reference, the current window, the decision, the report, the event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NONE
from prefect.events import Event, emit_event

from evergreen import registry, tracking
from evergreen.config import EvergreenConfig
from evergreen.drift import DriftResult, detect_drift
from evergreen.drift_report import REPORT_ARTIFACT, DriftReport, check_run, decision_record, evidently_report
from tasks.common import flow_run_id, markdown_artifact, table_artifact, talks_to_tracking

DRIFT_EVENT = "evergreen.drift.detected"


def model_resource_id(model_name: str) -> str:
    return f"evergreen.model.{model_name}"


# One retry: loading the champion reads the registry and its artifacts, which a busy server may refuse once.
@task(name="load-champion", cache_policy=NONE, retries=1, retry_delay_seconds=2)
@talks_to_tracking
def load_champion(cfg: EvergreenConfig) -> registry.Champion | None:
    """The champion model (None: no champion yet)."""
    return registry.load_champion(cfg.tracking_uri, cfg.registry.model_name)


@task(name="load-reference", cache_policy=NONE, retries=1, retry_delay_seconds=2)
@talks_to_tracking
def load_reference(cfg: EvergreenConfig, champion: registry.Champion) -> pd.DataFrame:
    """The training sample logged with the champion, with its scores."""
    return registry.reference_sample(cfg.tracking_uri, champion)


@task(name="score-current-window", cache_policy=NONE)
def score_current(champion: registry.Champion, current: pd.DataFrame) -> np.ndarray:
    return champion.score(current)


@task(name="detect-drift", cache_policy=NONE)
def decide_drift(
    cfg: EvergreenConfig,
    champion: registry.Champion,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    scores: np.ndarray,
) -> DriftResult:
    return detect_drift(
        reference,
        current,
        champion.features,
        cfg.drift,
        reference_scores=reference["score"].to_numpy(),
        current_scores=scores,
        categorical=cfg.problem.categorical,
    )


@task(name="render-evidently-report", cache_policy=NONE)
def render_report(
    cfg: EvergreenConfig,
    champion: registry.Champion,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    scores: np.ndarray,
    decision: DriftResult,
    html_path: Path,
) -> DriftReport:
    """Evidently's report with the decision's rules, opened by the decision itself."""
    return evidently_report(
        reference,
        current,
        champion.features,
        cfg.drift,
        html_path,
        sample_rows=cfg.drift.report_sample_rows,
        categorical=cfg.problem.categorical,
        scores=(reference["score"].to_numpy(), scores),
        decision=decision,
    )


# One retry: a busy tracking server may refuse a write once; the check itself is already decided.
@task(name="log-drift-check", cache_policy=NONE, retries=1, retry_delay_seconds=2)
@talks_to_tracking
def log_check(
    cfg: EvergreenConfig, summary: dict[str, Any], decision: DriftResult, report: DriftReport
) -> dict[str, str]:
    """The decision record (JSON) beside the report, and both with Evidently's snapshot on a drift-check
    run of the model's experiment, where the MLflow UI renders the HTML. Returns the run's links."""
    record = decision_record(summary, decision, report)
    json_path = report.html.with_suffix(".json")
    json_path.write_text(record)
    tags, metrics, texts = check_run(summary, decision, report, record, flow_run_id() or "")
    run = tracking.log_drift_check(cfg, f"drift-{summary['as_of'][:10]}", tags, metrics, texts)
    return {
        **run,
        "decision_record": str(json_path),
        "report_uri": f"runs:/{run['run_id']}/{REPORT_ARTIFACT}",
        "report_url": tracking.run_url(tracking.ui_base(cfg), run["experiment_id"], run["run_id"], REPORT_ARTIFACT),
    }


def last_retrain_as_of(cfg: EvergreenConfig) -> pd.Timestamp | None:
    return registry.last_retrain_as_of(registry.client(cfg.tracking_uri), cfg.registry.model_name)


def emit_drift_event(cfg: EvergreenConfig, payload: dict[str, Any]) -> Event | None:
    """``evergreen.drift.detected`` about this config's model: the retraining trigger matches on it."""
    return emit_event(
        DRIFT_EVENT,
        resource={
            "prefect.resource.id": model_resource_id(cfg.registry.model_name),
            "prefect.resource.name": cfg.registry.model_name,
        },
        payload=payload,
    )


def publish(summary: dict[str, Any], table: list[dict[str, Any]]) -> None:
    """The decision, its reasons, the counts and the report's links as Prefect artifacts."""
    lines = [f"# Drift: **{summary['status'].upper()}**", ""]
    lines += [f"- {r}" for r in summary["reasons"]]
    if summary.get("window"):
        w = summary["window"]
        lines += [
            "",
            f"Window `{w['start']}` .. `{w['end']}`, {summary.get('rows', 0)} rows; "
            f"champion v{summary.get('champion_version')}.",
        ]
    if "drifted_share" in summary:
        lines += [
            "",
            f"**{summary['drifted_count']} of {summary['feature_count']} features drifted "
            f"(share {summary['drifted_share']:.1%})**, severity {summary['severity']:.2f}.",
        ]
    if summary.get("evidently"):
        lines += ["", *summary["evidently"]["notes"]]
    if summary.get("mlflow"):
        m = summary["mlflow"]
        lines += [
            "",
            f"Evidently report in MLflow: [{m['report_uri']}]({m['report_url']}) "
            f"(run [{m['run_id']}]({m['url']}); local copy `{summary['report']}`).",
        ]
    markdown_artifact("\n".join(lines), "drift-decision", f"Drift decision: {summary['status']}")
    if table:
        table_artifact(table, "drift-features", "Per-feature drift (KS for numeric, PSI for categorical)")
