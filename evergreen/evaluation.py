"""Holdout metrics, a paired bootstrap of the AUC difference, and per-slice AUCs.

The bootstrap resamples rows once and scores both models on the same resample (paired), so the
interval is on the *difference*, not two overlapping intervals. AUC per resample is computed from
ranks with multinomial row weights: one sort per model, O(n) per resample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

EPS = 1e-15


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:

    y = np.asarray(y)
    p = np.clip(np.asarray(p, dtype="float64"), EPS, 1 - EPS)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
    }


def _rank_groups(p: np.ndarray) -> tuple[np.ndarray, int]:
    """Index of each score's tie group in ascending order, and the number of groups."""
    uniq, inv = np.unique(p, return_inverse=True)
    return inv, len(uniq)


def weighted_auc(y: np.ndarray, groups: np.ndarray, n_groups: int, w: np.ndarray) -> float:
    """AUC with row weights; ties count one half (the Mann-Whitney convention, as sklearn)."""
    pos = np.bincount(groups, weights=w * y, minlength=n_groups)
    neg = np.bincount(groups, weights=w * (1 - y), minlength=n_groups)
    tp, tn = pos.sum(), neg.sum()
    if tp == 0 or tn == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (tp * tn))


@dataclass(frozen=True)
class BootstrapDiff:
    mean: float
    lower: float
    upper: float
    confidence: float
    n_bootstrap: int


def paired_bootstrap_auc_diff(
    y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray, n_bootstrap: int, confidence: float, seed: int
) -> BootstrapDiff:
    """Percentile CI of AUC(new) - AUC(old) over resamples shared by both models."""
    y = np.asarray(y, dtype="float64")
    rng = np.random.default_rng(seed)
    g_new, k_new = _rank_groups(np.asarray(p_new))
    g_old, k_old = _rank_groups(np.asarray(p_old))
    n = len(y)
    diffs = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype("float64")
        diffs[b] = weighted_auc(y, g_new, k_new, w) - weighted_auc(y, g_old, k_old, w)
    diffs = diffs[~np.isnan(diffs)]
    alpha = (1 - confidence) / 2
    return BootstrapDiff(
        mean=float(diffs.mean()),
        lower=float(np.quantile(diffs, alpha)),
        upper=float(np.quantile(diffs, 1 - alpha)),
        confidence=confidence,
        n_bootstrap=int(len(diffs)),
    )


def slice_aucs(
    frame: pd.DataFrame, y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray | None, slices: list[str], min_support: int
) -> pd.DataFrame:
    """ROC AUC of each model per slice value; slices below ``min_support`` rows (or one class) are marked."""

    rows = []
    for column in slices:
        if column not in frame.columns:
            raise KeyError(f"gate slice column '{column}' is not in the holdout frame; fix gate.slices in the config")
        values = frame[column].astype(str).to_numpy()
        for value in np.unique(values):
            m = values == value
            ys = y[m]
            supported = bool(m.sum() >= min_support and 0 < ys.sum() < len(ys))
            new = float(roc_auc_score(ys, p_new[m])) if supported else float("nan")
            old = float(roc_auc_score(ys, p_old[m])) if supported and p_old is not None else float("nan")
            rows.append(
                {
                    "slice": column,
                    "value": value,
                    "rows": int(m.sum()),
                    "positives": int(ys.sum()),
                    "supported": supported,
                    "challenger_auc": new,
                    "champion_auc": old,
                    "delta": new - old,
                }
            )
    # The columns exist with no slice configured too: a problem without slices has nothing to regress.
    columns = ["slice", "value", "rows", "positives", "supported", "challenger_auc", "champion_auc", "delta"]
    numbers = {"rows": "int64", "positives": "int64", "challenger_auc": "float64", "champion_auc": "float64"}
    return pd.DataFrame(rows, columns=columns).astype({**numbers, "delta": "float64", "supported": bool})
