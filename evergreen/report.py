"""Picture of a canary rollout: each traffic step's signals, canary next to champion (the gate's picture
is an SVG from :mod:`evergreen.charts`)."""

from __future__ import annotations

from typing import Any


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
