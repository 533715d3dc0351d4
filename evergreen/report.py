"""Pictures of decisions: the gate at a glance (metrics side by side, per-slice AUC change)."""

from __future__ import annotations

from typing import Any

from evergreen.gate import GateDecision


def plot_gate(d: GateDecision, max_slice_regression: float) -> Any:
    """Left: holdout metrics of challenger and champion. Right: AUC change per supported slice,
    red where it breaks the non-regression rule. The title carries the verdict and the CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1, 1.6]})
    names = list(d.challenger)
    x = np.arange(len(names))
    ax1.bar(x - 0.2, [d.challenger[n] for n in names], 0.4, label="challenger", color="#2a9d8f")
    if d.champion:
        ax1.bar(x + 0.2, [d.champion[n] for n in names], 0.4, label="champion", color="#8d99ae")
    ax1.set_xticks(x, [n.replace("_", " ") for n in names])
    ax1.set_ylim(0, 1)
    ax1.set_title("holdout metrics (AUCs: higher is better; losses: lower)")
    ax1.legend(loc="upper right", fontsize=8)
    supported = [s for s in d.slices if s["supported"]]
    if d.champion and supported:
        labels = [f"{s['slice']}={s['value']}" for s in supported]
        deltas = [s["delta"] for s in supported]
        colors = ["#e63946" if v < -max_slice_regression else "#2a9d8f" for v in deltas]
        ax2.barh(labels, deltas, color=colors)
        ax2.axvline(-max_slice_regression, color="#e63946", ls="--", lw=1, label=f"-{max_slice_regression} limit")
        ax2.axvline(0, color="black", lw=0.8)
        ax2.set_xlabel("ROC AUC change, challenger - champion")
        ax2.legend(loc="lower right", fontsize=8)
        ax2.set_title("per-slice change")
    else:
        labels = [f"{s['slice']}={s['value']}" for s in supported]
        ax2.barh(labels, [s["challenger_auc"] for s in supported], color="#2a9d8f")
        ax2.set_xlabel("challenger ROC AUC (no champion to compare)")
        ax2.set_title("per-slice AUC")
    ax2.tick_params(axis="y", labelsize=8)
    ci = ""
    if d.auc_diff:
        ci = f" - AUC gain {d.auc_diff['mean']:+.4f}, {d.auc_diff['confidence']:.0%} CI [{d.auc_diff['lower']:+.4f}, {d.auc_diff['upper']:+.4f}]"
    verdict = "PASS" if d.passed else "FAIL"
    fig.suptitle(
        f"gate {verdict}{' (cold start)' if d.cold_start else ''}{ci}", color="#2a9d8f" if d.passed else "#e63946"
    )
    fig.tight_layout()
    return fig


def plot_rollout(rec: dict[str, Any]) -> Any:
    """One panel per canary signal, one group of bars per traffic step: the canary next to the
    champion, the limit where there is one; failed steps in red. The title carries the outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = [s for s in rec["steps"] if "analysis" in s]
    panels = [
        ("error_rate", "error rate", "error_rate"),
        ("latency_p95", "p95 latency (ms)", "latency_p95_ms"),
        ("realised_log_loss", "realised log loss", "mean_log_loss"),
    ]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(15, 3.8))
    labels = [f"step {s['step']}\n{s['weight']:.0f}%" for s in rec["steps"]]
    colors = ["#2a9d8f" if s.get("analysis", {}).get("passed") else "#e63946" for s in rec["steps"]]
    axes[0].bar(labels, [s["weight"] for s in rec["steps"]], color=colors)
    axes[0].set_ylim(0, 100)
    axes[0].set_title("canary traffic (red: step failed)")
    x = np.arange(len(steps))
    for ax, (name, title, field) in zip(axes[1:], panels, strict=True):
        canary = [s["analysis"]["canary"][field] for s in steps]
        champion = [s["analysis"]["champion"][field] for s in steps]
        ax.bar(x - 0.2, [np.nan if v is None else v for v in canary], 0.4, label="canary", color="#e9c46a")
        ax.bar(x + 0.2, [np.nan if v is None else v for v in champion], 0.4, label="champion", color="#8d99ae")
        limits = [next((c["limit"] for c in s["analysis"]["checks"] if c["name"] == name), None) for s in steps]
        if name in ("error_rate", "latency_p95") and any(v is not None for v in limits):
            ax.plot(x, [np.nan if v is None else v for v in limits], "r_", ms=30, mew=2, label="limit")
        ax.set_xticks(x, [f"step {s['step']}" for s in steps])
        ax.set_title(title)
        ax.legend(fontsize=7)
    ok = rec["status"] == "promoted"
    fig.suptitle(
        f"rollout of {rec['model']} v{rec['version']}: {rec['status'].upper()} - {rec['reasons'][0][:110]}",
        color="#2a9d8f" if ok else "#e63946",
    )
    fig.tight_layout()
    return fig
