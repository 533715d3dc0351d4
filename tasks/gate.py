"""Gate stage: score the champion on the challenger's holdout and write the one decision record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from evergreen import registry, tracking
from evergreen.config import EvergreenConfig
from evergreen.gate import GateDecision, decide
from tasks.common import markdown_artifact, table_artifact


@task(name="score-champion", cache_policy=NONE, retries=1, retry_delay_seconds=2)
def score_champion(cfg: EvergreenConfig, holdout: pd.DataFrame) -> tuple[str | None, np.ndarray | None]:
    """The current champion's scores on the holdout, or (None, None) when there is no champion."""
    import mlflow

    c = registry.client(cfg.tracking_uri)
    version = registry.alias_version(c, cfg.registry.model_name, registry.CHAMPION)
    if version is None:
        return None, None
    import warnings

    mlflow.set_tracking_uri(cfg.tracking_uri)
    with warnings.catch_warnings():  # MLflow asks for predict() type hints; the signature covers the schema
        warnings.filterwarnings("ignore", message=".*type hint.*")
        model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@{registry.CHAMPION}")
    schema = model.metadata.get_input_schema()
    inputs = holdout[schema.input_names()] if schema is not None else holdout
    return version, np.asarray(model.predict(inputs), dtype="float64")


def _markdown(d: GateDecision, version_hint: str) -> str:
    lines = [f"# Gate: **{d.verdict.upper()}** ({version_hint})", ""]
    if d.cold_start:
        lines.append("No champion yet: cold-start rule applies.")
    lines += ["", "| metric | challenger | champion |", "|---|---|---|"]
    for k, v in d.challenger.items():
        old = f"{d.champion[k]:.4f}" if d.champion else "-"
        lines.append(f"| {k} | {v:.4f} | {old} |")
    if d.auc_diff:
        a = d.auc_diff
        lines += [
            "",
            f"ROC AUC gain {a['mean']:+.4f}, {a['confidence']:.0%} paired-bootstrap CI "
            f"[{a['lower']:+.4f}, {a['upper']:+.4f}] over {a['n_bootstrap']} resamples.",
        ]
    lines += ["", "## Rules", ""] + [f"- {r}" for r in d.reasons]
    return "\n".join(lines)


@task(name="gate-challenger", cache_policy=NONE)
def run_gate(
    cfg: EvergreenConfig,
    holdout: pd.DataFrame,
    challenger_scores: np.ndarray,
    champion_version: str | None,
    champion_scores: np.ndarray | None,
    run_id: str,
    windows: dict[str, str],
) -> tuple[GateDecision, Path]:
    y = holdout["delayed"].to_numpy()
    d = decide(holdout, y, challenger_scores, champion_scores, cfg.gate, champion_version)
    d.holdout_window = windows
    record = {**d.as_dict(), "mlflow_run_id": run_id, "model_name": cfg.registry.model_name}
    path = cfg.reports_dir / "gate" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str))
    c = registry.client(cfg.tracking_uri)
    c.log_dict(run_id, json.loads(json.dumps(record, default=str)), "gate/decision.json")
    tracking.log_metrics(cfg.tracking_uri, run_id, _gate_metrics(d))
    from evergreen.charts import gate_chart

    picture = gate_chart(d, cfg.gate.max_slice_regression)
    path.with_suffix(".svg").write_text(picture)  # beside the record, and in the run as gate/decision.svg
    c.log_text(run_id, picture, "gate/decision.svg")
    hint = f"champion v{champion_version}" if champion_version else "cold start"
    markdown_artifact(_markdown(d, hint), "gate-decision", f"Gate {d.verdict}: challenger vs {hint}")
    table_artifact(
        [
            {
                "slice": s["slice"],
                "value": s["value"],
                "rows": s["rows"],
                "challenger_auc": s["challenger_auc"],
                "champion_auc": s["champion_auc"],
                "delta": s["delta"],
                "regressed": s["regressed"],
            }
            for s in d.slices
            if s["supported"]
        ],
        "gate-slices",
        "Per-slice ROC AUC on the holdout",
    )
    return d, path


def _gate_metrics(d: GateDecision) -> dict[str, float]:
    out = {f"holdout.{k}": v for k, v in d.challenger.items()}
    if d.champion:
        out |= {f"holdout.champion.{k}": v for k, v in d.champion.items()}
    if d.auc_diff:
        out |= {f"gate.auc_diff.{k}": float(d.auc_diff[k]) for k in ("mean", "lower", "upper")}
    out["gate.passed"] = float(d.passed)
    return out
