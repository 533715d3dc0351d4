"""Gate stage: the champion's scores on the challenger's holdout, the decision, and its one record."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from evergreen import tracking_jobs
from evergreen.config import EvergreenConfig
from evergreen.gate import GateDecision, decide
from evergreen.worker import WorkerProcess
from tasks.common import markdown_artifact, table_artifact
from tasks.training import LoggedModel


@task(name="score-champion", cache_policy=NONE)
def score_champion(job: Future[tuple[str | None, np.ndarray | None]]) -> tuple[str | None, np.ndarray | None]:
    """The champion's version and scores on the holdout, or (None, None) when there is no champion.

    Scored by the tracking process as soon as the holdout was known (``tracking_jobs.champion_scores``);
    this waits for that result."""
    return job.result()


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
    windows: dict[str, str],
) -> GateDecision:
    """Challenger vs champion on the same holdout, by the configured rules; the Prefect artifacts."""
    y = holdout["delayed"].to_numpy()
    d = decide(holdout, y, challenger_scores, champion_scores, cfg.gate, champion_version)
    d.holdout_window = windows
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
            }
            for s in d.slices
            if s["supported"]
        ],
        "gate-slices",
        "Per-slice ROC AUC on the holdout",
    )
    return d


@task(name="record-gate-decision", cache_policy=NONE)
def record_gate(cfg: EvergreenConfig, tracker: WorkerProcess, d: GateDecision, logged: LoggedModel) -> Path:
    """The one decision record: a JSON file named by the run, and on the run ``gate/decision.json``,
    its picture ``gate/decision.png`` and the gate's metrics. Complete before anything is registered."""
    record = {**d.as_dict(), "mlflow_run_id": logged.run_id, "model_name": cfg.registry.model_name}
    path = cfg.reports_dir / "gate" / f"{logged.run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str))
    tracker.submit(
        tracking_jobs.log_gate,
        cfg.tracking_uri,
        logged.run_id,
        record,
        d,
        cfg.gate.max_slice_regression,
        path.with_suffix(".png"),
    ).result()
    return path
