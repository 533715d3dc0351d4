"""Replay: walk history week by week and measure what each retraining strategy buys.

Pure logic, no Prefect: the week plan, per-strategy configs derived from one base config, realised
metrics of the model each strategy had in production, the summary per strategy, the target check,
the picture and the files. ``flows/replay.py`` runs the real training and drift flows around it.

Week ``w = [t, t + 7 d)`` is scored with the champion each strategy had at ``t``; each strategy then
acts as of ``t + 7 d`` (the end of the week, when its outcomes are known), and the champion it has
after acting serves the next week.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from evergreen.config import EvergreenConfig
from evergreen.evaluation import metrics

Strategy = Literal["static", "always-retrain", "evergreen"]
STATIC: Strategy = "static"
ALWAYS: Strategy = "always-retrain"
EVERGREEN: Strategy = "evergreen"
STRATEGIES: tuple[Strategy, ...] = (STATIC, ALWAYS, EVERGREEN)
POLICIES = {
    STATIC: "trained once on the first window, never again",
    ALWAYS: "retrains every week, promotes without a gate",
    EVERGREEN: "drift flow every week; on drift (or without a champion), the training flow and its gate decide",
}
COLORS = {STATIC: "#8d99ae", ALWAYS: "#e9c46a", EVERGREEN: "#2a9d8f"}
WEEK = pd.Timedelta(days=7)
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier")


@dataclass(frozen=True)
class Week:
    number: int  # 1-based
    start: pd.Timestamp
    end: pd.Timestamp


def utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def plan_weeks(start: str | pd.Timestamp, data_end: pd.Timestamp, weeks: int | None = None) -> list[Week]:
    """Consecutive weeks ``[t, t + 7 d)`` from ``start`` while ``t`` is not after ``data_end`` (the
    last prediction time in the data), at most ``weeks`` of them; the last one may be short of rows."""
    t, end = utc(start), utc(data_end)
    if weeks is not None and weeks < 1:
        raise ValueError(f"weeks must be at least 1, got {weeks}")
    if t >= end:
        raise ValueError(f"start {t:%Y-%m-%d} is not before the end of the data ({end:%Y-%m-%d %H:%M})")
    plan: list[Week] = []
    while t <= end and (weeks is None or len(plan) < weeks):
        plan.append(Week(len(plan) + 1, t, t + WEEK))
        t += WEEK
    return plan


def model_name(base: str, run_id: str, strategy: str) -> str:
    """One registered model per strategy and replay, so no strategy sees another's champion."""
    return f"{base}-{run_id}-{strategy}"


def strategy_config(base: EvergreenConfig, name: str) -> dict[str, Any]:
    """The base config with its own model name; everything else (home, windows, tuning, gate,
    drift) stays shared. Promotion is direct: history has no serving traffic for a canary."""
    body = base.model_dump(mode="json")
    body["registry"]["model_name"] = name
    body["rollout"]["enabled"] = False
    body["drift"]["emit_event"] = False  # the replay acts on each decision itself
    return body


def write_strategy_configs(base: EvergreenConfig, run_id: str, folder: Path) -> dict[str, Path]:

    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for s in STRATEGIES:
        path = folder / f"{s}.yaml"
        body = strategy_config(base, model_name(base.registry.model_name, run_id, s))
        path.write_text(f"# replay {run_id}, strategy {s}: {POLICIES[s]}\n" + yaml.safe_dump(body, sort_keys=False))
        paths[s] = path
    return paths


def week_metrics(y: np.ndarray, p: np.ndarray | None) -> dict[str, float]:
    """Realised metrics of one week's scores ``p`` against the outcomes ``y``; NaN where there is no
    model (``p`` is None) or the week has no rows or one class only."""
    y = np.asarray(y, dtype="float64")
    out = {"rows": len(y), "label_rate": float(y.mean()) if len(y) else math.nan}
    if p is not None and len(y) and 0 < y.sum() < len(y):
        out.update(metrics(y, np.asarray(p, dtype="float64")))
    else:
        out.update(dict.fromkeys(METRICS, math.nan))
    return out


def summarize(rows: list[dict[str, Any]], initial_seconds: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Per strategy: mean and worst weekly AUC, mean PR AUC and log loss, retrains, promotions,
    drift detections, gate refusals and compute time (training + drift flow wall time of the walk)."""
    frame = pd.DataFrame(rows)
    out = []
    for s in [s for s in STRATEGIES if s in set(frame["strategy"])]:
        f = frame[frame["strategy"] == s]
        scored = f[f["roc_auc"].notna()]
        worst = scored.loc[scored["roc_auc"].idxmin()] if len(scored) else None
        out.append(
            {
                "strategy": s,
                "policy": POLICIES[s],
                "weeks": len(f),
                "weeks_scored": len(scored),
                "mean_auc": float(scored["roc_auc"].mean()) if len(scored) else math.nan,
                "worst_auc": float(worst["roc_auc"]) if worst is not None else math.nan,
                "worst_week": str(worst["start"])[:10] if worst is not None else "",
                "mean_pr_auc": float(scored["pr_auc"].mean()) if len(scored) else math.nan,
                "mean_log_loss": float(scored["log_loss"].mean()) if len(scored) else math.nan,
                "drift_detections": int((f["drift"] == "drift").sum()),
                "retrains": int(f["retrained"].sum()),
                "promotions": int(f["promoted"].sum()),
                "gate_refusals": int((f["retrained"] & ~f["promoted"] & (f["gate"] == "fail")).sum()),
                "errors": int((f["error"] != "").sum()),
                "compute_seconds": round(float(f["seconds"].sum()), 1),
                "initial_fit_seconds": round(float((initial_seconds or {}).get(s, 0.0)), 1),
            }
        )
    return out


def check_target(
    summary: list[dict[str, Any]],
    auc_tolerance: float = 0.005,
    retrain_share: float = 1 / 3,
    static_margin: float = 0.005,
) -> dict[str, Any]:
    """The issue's target: Evergreen's mean weekly AUC within ``auc_tolerance`` of always-retrain,
    with at most ``retrain_share`` of its retrains, and at least ``static_margin`` above static."""
    by = {r["strategy"]: r for r in summary}
    if not all(s in by for s in STRATEGIES):
        return {"met": False, "checks": [], "note": "needs all three strategies"}
    e, a, s = by[EVERGREEN], by[ALWAYS], by[STATIC]
    checks = [
        {
            "check": f"mean AUC within {auc_tolerance} of always-retrain",
            "value": e["mean_auc"] - a["mean_auc"],
            "passed": bool(e["mean_auc"] >= a["mean_auc"] - auc_tolerance),
        },
        {
            "check": f"at most {retrain_share:.0%} of always-retrain's retrains",
            "value": e["retrains"] / a["retrains"] if a["retrains"] else math.nan,
            "passed": bool(e["retrains"] <= retrain_share * a["retrains"]),
        },
        {
            "check": f"mean AUC at least {static_margin} above static",
            "value": e["mean_auc"] - s["mean_auc"],
            "passed": bool(e["mean_auc"] >= s["mean_auc"] + static_margin),
        },
    ]
    return {"met": all(c["passed"] for c in checks), "checks": checks}


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def summary_markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | mean weekly AUC | worst weekly AUC (week of) | mean PR AUC | mean log loss "
        "| drift detections | retrains | promotions | compute (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['strategy']} | {_fmt(r['mean_auc'])} | {_fmt(r['worst_auc'])} ({r['worst_week']}) "
            f"| {_fmt(r['mean_pr_auc'])} | {_fmt(r['mean_log_loss'])} | {r['drift_detections']} | {r['retrains']} "
            f"| {r['promotions']} | {r['compute_seconds']:.0f} |"
        )
    return "\n".join(lines)


def target_markdown(target: dict[str, Any]) -> str:
    if not target.get("checks"):
        return f"Target: not evaluated ({target.get('note', '')})."
    items = [
        f"- {'met' if c['passed'] else 'NOT met'}: {c['check']} ({_fmt(float(c['value']), 4)})"
        for c in target["checks"]
    ]
    return f"Target {'met' if target['met'] else 'not met'}:\n" + "\n".join(items)


def plot_replay(rows: list[dict[str, Any]], summary: list[dict[str, Any]], title: str) -> Any:
    """Top: realised weekly ROC AUC per strategy, with Evergreen's drift detections (dotted lines at
    the end of the week that drifted), its promotions (stars on the first week the new champion
    served) and gate refusals (open circles). Bottom: the weekly label rate (share of positives), the drift itself."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The same look whatever ran before in this process (Optuna's plots switch the global style).
    with plt.style.context("default"):
        return _plot(plt, pd.DataFrame(rows), {r["strategy"]: r for r in summary}, title)


def _plot(plt: Any, frame: pd.DataFrame, means: dict[str, dict[str, Any]], title: str) -> Any:
    frame["mid"] = pd.to_datetime(frame["start"]) + pd.Timedelta(days=3.5)
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(12, 6.8), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    for s in STRATEGIES:
        f = frame[frame["strategy"] == s]
        if f.empty:
            continue
        r = means.get(s, {})
        label = f"{s}: mean {_fmt(r.get('mean_auc', math.nan))}, {r.get('retrains', 0)} retrains"
        ax.plot(f["mid"], f["roc_auc"], marker="o", ms=3, lw=1.6, color=COLORS[s], label=label)
    ev = frame[frame["strategy"] == EVERGREEN].reset_index(drop=True)
    if not ev.empty:
        ends = pd.to_datetime(ev["end"])
        nxt = ev["roc_auc"].shift(-1)
        drifted = ev["drift"] == "drift"
        for i, x in enumerate(ends[drifted]):
            ax.axvline(x, color="#e76f51", ls=":", lw=1, label="drift detected (Evergreen)" if i == 0 else None)
        promoted = ev["promoted"].astype(bool)
        refused = ev["retrained"].astype(bool) & ~promoted
        if promoted.any():
            ax.scatter(
                ends[promoted] + pd.Timedelta(days=3.5),
                nxt[promoted],
                marker="*",
                s=160,
                color=COLORS[EVERGREEN],
                edgecolor="black",
                zorder=5,
                label="Evergreen promotion (gate passed)",
            )
        if refused.any():
            ax.scatter(
                ends[refused] + pd.Timedelta(days=3.5),
                nxt[refused],
                marker="o",
                s=70,
                facecolor="none",
                edgecolor="#e76f51",
                zorder=5,
                label="Evergreen retrain refused by the gate",
            )
    ax.set_ylabel("realised ROC AUC of the week")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncol=2)
    ax.set_title(title)
    weekly = frame.drop_duplicates("start")
    ax2.bar(pd.to_datetime(weekly["start"]), weekly["label_rate"], width=6, align="edge", color="#adb5bd")
    ax2.set_ylabel("label rate")
    ax2.grid(alpha=0.3)
    return fig


def _to_json_value(v: Any) -> Any:
    """Plain JSON values: NaN and infinities as null, numpy scalars as Python ones, times as ISO text."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, np.generic):
        return _to_json_value(v.item())
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _to_json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_to_json_value(x) for x in v]
    return v


def write_outputs(
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    target: dict[str, Any],
    settings: dict[str, Any],
    folder: Path,
    stem: str,
    plot_path: Path | None = None,
) -> dict[str, Path]:
    """``<stem>.csv`` (one row per week and strategy), ``<stem>_summary.csv``, ``<stem>.json`` (all of
    it with the settings) and the PNG (``plot_path``, default ``<stem>.png`` next to them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "weekly_csv": folder / f"{stem}.csv",
        "summary_csv": folder / f"{stem}_summary.csv",
        "json": folder / f"{stem}.json",
        "png": plot_path or folder / f"{stem}.png",
    }
    pd.DataFrame(rows).to_csv(paths["weekly_csv"], index=False, float_format="%.5f")
    pd.DataFrame(summary).to_csv(paths["summary_csv"], index=False, float_format="%.5f")
    doc = {"settings": settings, "summary": summary, "target": target, "weeks": rows}
    paths["json"].write_text(json.dumps(_to_json_value(doc), indent=1) + "\n")
    fig = plot_replay(rows, summary, settings.get("title", "Replay"))
    paths["png"].parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(paths["png"], dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths
