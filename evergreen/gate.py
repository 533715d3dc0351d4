"""The promotion gate: one decision, with every rule it checked and why it passed or failed.

Rules, in order (all must hold to promote):
1. absolute floors on the challenger's holdout metrics;
2. with a champion: the lower bound of the paired-bootstrap CI of the ROC AUC gain reaches
   ``min_improvement``; secondary metrics do not regress beyond their tolerance; no supported slice
   loses more than ``max_slice_regression`` AUC;
3. without a champion (cold start): ``cold_start: promote`` promotes on floors alone, ``hold`` never.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evergreen.config import GateConfig
from evergreen.evaluation import metrics, paired_bootstrap_auc_diff, slice_aucs

HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False}


@dataclass
class GateCheck:
    rule: str
    passed: bool
    detail: str


@dataclass
class GateDecision:
    passed: bool
    cold_start: bool
    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    auc_diff: dict[str, float] | None
    checks: list[GateCheck]
    slices: list[dict[str, Any]] = field(default_factory=list)
    holdout_rows: int = 0
    holdout_window: dict[str, str] = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        return [f"{'PASS' if c.passed else 'FAIL'} {c.rule}: {c.detail}" for c in self.checks]

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict
        d["reasons"] = self.reasons
        return d

    def summary(self) -> str:
        return f"gate {self.verdict.upper()}: " + "; ".join(
            c.detail for c in self.checks if not c.passed or self.passed
        )


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in table.to_dict("records")]


def _floor_checks(m: dict[str, float], cfg: GateConfig) -> list[GateCheck]:
    checks = []
    for name, floor in cfg.floors.items():
        ok = m[name] >= floor if HIGHER_IS_BETTER[name] else m[name] <= floor
        sign = ">=" if HIGHER_IS_BETTER[name] else "<="
        checks.append(GateCheck(f"floor:{name}", ok, f"{name} {m[name]:.4f} {sign} {floor}"))
    return checks


def decide(
    holdout: pd.DataFrame,
    y: np.ndarray,
    p_new: np.ndarray,
    p_old: np.ndarray | None,
    cfg: GateConfig,
    champion_version: str | None = None,
) -> GateDecision:
    """Judge challenger scores ``p_new`` against champion scores ``p_old`` on the same holdout rows."""
    if len(y) == 0 or len(np.unique(y)) < 2:
        raise ValueError("the gate holdout is empty or has one class only; widen window.holdout_days")
    m_new = metrics(y, p_new)
    checks = _floor_checks(m_new, cfg)
    if p_old is None:
        promote = cfg.cold_start == "promote"
        checks.append(GateCheck("cold-start", promote, f"no champion yet; cold_start={cfg.cold_start}"))
        table = slice_aucs(holdout, y, p_new, None, cfg.slices, cfg.slice_min_support)
        table["regressed"] = False  # nothing to regress against
        return GateDecision(
            all(c.passed for c in checks), True, m_new, None, None, None, checks, _records(table), len(y)
        )
    m_old = metrics(y, p_old)
    boot = paired_bootstrap_auc_diff(y, p_new, p_old, cfg.n_bootstrap, cfg.confidence, cfg.seed)
    checks.append(
        GateCheck(
            "improvement:roc_auc",
            boot.lower >= cfg.min_improvement,
            f"AUC gain {m_new['roc_auc'] - m_old['roc_auc']:+.4f}, {cfg.confidence:.0%} CI "
            f"[{boot.lower:+.4f}, {boot.upper:+.4f}] lower bound vs required {cfg.min_improvement:+.4f}",
        )
    )
    for name, tol in cfg.max_secondary_regression.items():
        worse = (m_old[name] - m_new[name]) if HIGHER_IS_BETTER[name] else (m_new[name] - m_old[name])
        checks.append(
            GateCheck(
                f"no-regression:{name}",
                worse <= tol,
                f"{name} {m_old[name]:.4f} -> {m_new[name]:.4f} "
                + (f"(worse by {worse:.4f}, tolerance {tol})" if worse > 0 else f"(better by {-worse:.4f})"),
            )
        )
    table = slice_aucs(holdout, y, p_new, p_old, cfg.slices, cfg.slice_min_support)
    table["regressed"] = table["supported"] & (table["delta"] < -cfg.max_slice_regression)
    supported = table[table["supported"]]
    regressed = table[table["regressed"]]
    worst = supported.nsmallest(1, "delta")
    worst_txt = (
        f"worst {worst.iloc[0]['slice']}={worst.iloc[0]['value']} {worst.iloc[0]['delta']:+.4f}"
        if len(worst)
        else "no supported slice"
    )
    checks.append(
        GateCheck(
            "no-regression:slices",
            regressed.empty,
            f"{len(regressed)} of {len(supported)} supported slices lose > {cfg.max_slice_regression} AUC ({worst_txt})"
            + (
                ""
                if regressed.empty
                else ": " + ", ".join(f"{r.slice}={r.value} {r.delta:+.4f}" for r in regressed.itertuples())
            ),
        )
    )
    return GateDecision(
        passed=all(c.passed for c in checks),
        cold_start=False,
        challenger=m_new,
        champion=m_old,
        champion_version=champion_version,
        auc_diff={
            "mean": boot.mean,
            "lower": boot.lower,
            "upper": boot.upper,
            "confidence": boot.confidence,
            "n_bootstrap": boot.n_bootstrap,
        },
        checks=checks,
        slices=_records(table),
        holdout_rows=len(y),
    )
