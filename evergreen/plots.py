"""Pictures for people: the gate's decision and a canary rollout, as matplotlib figures.

matplotlib is an optional heavy import (see evergreen/__init__.py): it loads when a picture is drawn.
Callers save the figure (PNG beside the JSON record) or log it with ``mlflow.log_figure``, then close it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from evergreen.gate import GateDecision

PASS_COLOR, FAIL_COLOR, CHAMPION_COLOR = "#2a9d8f", "#e63946", "#8d99ae"


def _figure(width: float, height: float, panels: int) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, panels, width_ratios=None)


def plot_gate(d: GateDecision, max_slice_regression: float) -> Figure:
    """Left: holdout metrics of challenger and champion side by side. Right: ROC AUC change per
    supported slice, red where the gate found it broke the non-regression rule, with the limit drawn
    (or each slice's AUC on a cold start). The title carries the verdict and the CI of the AUC gain."""
    supported = [s for s in d.slices if s["supported"]]
    fig, (left, right) = _figure(13, max(4.5, 1.5 + 0.25 * len(supported)), 2)
    ci = ""
    if d.auc_diff:
        a = d.auc_diff
        ci = f": AUC gain {a['mean']:+.4f}, {a['confidence']:.0%} CI [{a['lower']:+.4f}, {a['upper']:+.4f}]"
    fig.suptitle(
        f"gate {'PASS' if d.passed else 'FAIL'}{' (cold start)' if d.cold_start else ''}{ci}",
        color=PASS_COLOR if d.passed else FAIL_COLOR,
        fontweight="bold",
    )
    names = list(d.challenger)
    x = np.arange(len(names))
    width = 0.38 if d.champion else 0.6
    left.bar(
        x - (width / 2 if d.champion else 0),
        [d.challenger[n] for n in names],
        width,
        color=PASS_COLOR,
        label="challenger",
    )
    if d.champion:
        left.bar(x + width / 2, [d.champion[n] for n in names], width, color=CHAMPION_COLOR, label="champion")
    left.set_xticks(x, [n.replace("_", " ") for n in names])
    left.set_ylim(0, 1)
    left.set_title("holdout metrics (AUCs: higher is better; losses: lower)")
    left.legend()

    labels = [f"{s['slice']}={s['value']}" for s in supported]
    colors = [FAIL_COLOR if s["regressed"] else PASS_COLOR for s in supported]
    y = np.arange(len(supported))
    if d.champion:
        right.barh(y, [float(s["delta"]) for s in supported], color=colors)
        right.axvline(0, color="black", lw=0.8)
        right.axvline(-max_slice_regression, color=FAIL_COLOR, ls="--", label=f"limit -{max_slice_regression}")
        right.set_title("per-slice change")
        right.set_xlabel("ROC AUC change, challenger - champion")
        right.legend()
    else:
        right.barh(y, [float(s["challenger_auc"]) for s in supported], color=colors)
        right.set_xlim(0, 1)
        right.set_title("per-slice ROC AUC")
        right.set_xlabel("challenger ROC AUC (no champion to compare)")
    right.set_yticks(y, labels)
    right.invert_yaxis()
    return fig


def plot_rollout(rec: dict[str, Any]) -> Figure:
    """One panel per canary signal, one group of bars per traffic step: the canary next to the
    champion, the limit where there is one; failed steps in red. The title carries the outcome."""

    steps = [s for s in rec["steps"] if "analysis" in s]
    panels = [
        ("error_rate", "error rate", "error_rate"),
        ("latency_p95", "p95 latency (ms)", "latency_p95_ms"),
        ("realised_log_loss", "realised log loss", "mean_log_loss"),
    ]
    fig, axes = _figure(15, 3.8, len(panels) + 1)
    labels = [f"step {s['step']}\n{s['weight']:.0f}%" for s in rec["steps"]]
    colors = [PASS_COLOR if s.get("analysis", {}).get("passed") else FAIL_COLOR for s in rec["steps"]]
    axes[0].bar(labels, [s["weight"] for s in rec["steps"]], color=colors)
    axes[0].set_ylim(0, 100)
    axes[0].set_title("canary traffic (red: step failed)")
    x = np.arange(len(steps))
    for ax, (name, title, field) in zip(axes[1:], panels, strict=True):
        canary = [s["analysis"]["canary"][field] for s in steps]
        champion = [s["analysis"]["champion"][field] for s in steps]
        ax.bar(x - 0.2, [np.nan if v is None else v for v in canary], 0.4, label="canary", color="#e9c46a")
        ax.bar(x + 0.2, [np.nan if v is None else v for v in champion], 0.4, label="champion", color=CHAMPION_COLOR)
        limits = [next((c["limit"] for c in s["analysis"]["checks"] if c["name"] == name), None) for s in steps]
        if name in ("error_rate", "latency_p95") and any(v is not None for v in limits):
            ax.plot(x, [np.nan if v is None else v for v in limits], "r_", ms=30, mew=2, label="limit")
        ax.set_xticks(x, [f"step {s['step']}" for s in steps])
        ax.set_title(title)
        ax.legend(fontsize=7)
    ok = rec["status"] == "promoted"
    fig.suptitle(
        f"rollout of {rec['model']} v{rec['version']}: {rec['status'].upper()} - {rec['reasons'][0][:110]}",
        color=PASS_COLOR if ok else FAIL_COLOR,
    )
    return fig
