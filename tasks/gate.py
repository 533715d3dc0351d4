"""Gate stage: the challenger against the champion on the same holdout, one decision record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NONE

from evergreen import registry, tracking
from evergreen.config import EvergreenConfig
from evergreen.gate import GateDecision, decide
from evergreen.training import TrainingSet
from tasks.common import markdown_artifact, table_artifact, talks_to_tracking


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


# One retry: loading the champion reads the registry and its artifacts, which a busy server may refuse once.
@task(name="gate-challenger", cache_policy=NONE, retries=1, retry_delay_seconds=2)
@talks_to_tracking
def gate_challenger(
    cfg: EvergreenConfig, data: TrainingSet, challenger_scores: np.ndarray, run_id: str
) -> tuple[GateDecision, Path]:
    """Score the champion (if any) on the challenger's holdout, decide, and record the decision."""
    champion = registry.load_champion(cfg.tracking_uri, cfg.registry.model_name)
    holdout = data.holdout
    d = decide(
        holdout,
        holdout[data.label].to_numpy(),
        challenger_scores,
        champion.score(holdout) if champion else None,
        cfg.gate,
        champion.version if champion else None,
    )
    window = {"start": data.windows.holdout_start.isoformat(), "end": data.windows.end.isoformat()}
    path = tracking.log_gate_decision(cfg, d, run_id, window)
    hint = f"champion v{d.champion_version}" if d.champion_version else "cold start"
    markdown_artifact(_markdown(d, hint), "gate-decision", f"Gate {d.verdict}: challenger vs {hint}")
    table_artifact(
        [
            {k: s[k] for k in ("slice", "value", "rows", "challenger_auc", "champion_auc", "delta", "regressed")}
            for s in d.slices
            if s["supported"]
        ],
        "gate-slices",
        "Per-slice ROC AUC on the holdout",
    )
    return d, path
