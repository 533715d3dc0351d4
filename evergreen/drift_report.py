"""Evidently's HTML report of a drift decision, computed with the decision's own rules.

Evidently's default tests (Wasserstein, Jensen-Shannon, chi-square, 50% share) flag other columns
than Evergreen's decision, and a report that counts "24 of 36" beside a decision of "13 of 37" leaves
the reader guessing which one acted. So the report runs Evidently's ``DataDriftPreset`` with two
tests registered in Evidently's own stat-test registry that apply :func:`evergreen.drift.detect_drift`'s
rules (KS with the effect-size floor; KS-or-PSI for ``psi_numeric_columns``), PSI for categoricals,
the decision's thresholds and ``drifted_share``, and a ``ValueDrift`` of the scores at
``prediction_psi_threshold``. On the same rows both count the same.

They can still differ in two cases, which the page and the decision record name: the report runs on
a fixed-seed sample when a window exceeds ``report_sample_rows`` (Evidently is ~35x slower than the
decision), and Evidently cannot test a column without values on a side, which the decision counts as
drifted when the values vanished from the window. The decision, on every row, is the one that acts.
"""

from __future__ import annotations

import functools
import html
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evergreen.config import DriftConfig
from evergreen.drift import PREDICTION, DriftResult, check_columns, feature_kind, ks_test, psi

KS_TEST = "evergreen_ks"
REPORT_ARTIFACT = "drift/report.html"
KS_OR_PSI_TEST = "evergreen_psi_or_ks"


@dataclass(frozen=True)
class DriftReport:
    """What Evidently's report states: per column its method, score and verdict, and its count."""

    html: Path
    snapshot_json: Path
    columns: dict[str, dict[str, Any]]
    drifted_count: int  # Evidently's DriftedColumnsCount over the tested feature columns
    column_count: int
    drifted_share: float
    reference_rows: int  # rows per side the report ran on (a sample of a larger window)
    current_rows: int
    notes: list[str] = field(default_factory=list)  # which count decides, and why the counts differ

    def as_dict(self) -> dict[str, Any]:
        return {
            "html": str(self.html),
            "snapshot_json": str(self.snapshot_json),
            "drifted_count": self.drifted_count,
            "column_count": self.column_count,
            "drifted_share": self.drifted_share,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "notes": self.notes,
        }


# --- Evergreen's rules as Evidently stat tests --------------------------------------------------------


@functools.cache
def _register(kind: str, ks_pvalue: float, ks_min_statistic: float) -> str:
    """Register (once per process and parameters) a numeric stat test in Evidently's registry and
    return its name. Evidently passes one threshold per column, so the other parameters of the rule
    are part of the test itself, and of its name."""
    from evidently.legacy.calculations.stattests import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    floor = f"K-S p <= {ks_pvalue:g} and D >= {ks_min_statistic:g}"

    def ks(ref: pd.Series, cur: pd.Series, _: Any, threshold: float) -> tuple[float, bool]:
        d, p = ks_test(ref, cur)
        return p, bool(p <= threshold and d >= ks_min_statistic)

    def ks_or_psi(ref: pd.Series, cur: pd.Series, _: Any, threshold: float) -> tuple[float, bool]:
        d, p = ks_test(ref, cur)
        value = psi(ref, cur)
        return value, bool(value >= threshold or (p <= ks_pvalue and d >= ks_min_statistic))

    if kind == KS_TEST:
        name, display, impl = f"{KS_TEST}_d{ks_min_statistic:g}", f"K-S p-value (drift: {floor})", ks
    else:
        name, display, impl = (
            f"{KS_OR_PSI_TEST}_p{ks_pvalue:g}_d{ks_min_statistic:g}",
            f"PSI (drift also: {floor})",
            ks_or_psi,
        )
    test = StatTest(name=name, display_name=display, allowed_feature_types=[ColumnType.Numerical])
    register_stattest(test, impl)
    return name


def stat_tests(cfg: DriftConfig) -> tuple[str, str]:
    """The names of the registered tests for numeric columns: (KS with floor, KS-or-PSI)."""
    return (
        _register(KS_TEST, cfg.ks_pvalue, cfg.ks_min_statistic),
        _register(KS_OR_PSI_TEST, cfg.ks_pvalue, cfg.ks_min_statistic),
    )


# --- the report ----------------------------------------------------------------------------------------


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """At most ``rows`` rows, fixed seed, in their original order (Evidently plots by position)."""
    if len(frame) <= rows:
        return frame
    pick = np.sort(np.random.default_rng(seed).choice(len(frame), size=rows, replace=False))
    return frame.iloc[pick]


def evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str],
    cfg: DriftConfig,
    html_path: Path,
    sample_rows: int,
    seed: int = 0,
    categorical: Sequence[str] = (),
    scores: tuple[np.ndarray, np.ndarray] | None = None,
    decision: DriftResult | None = None,
) -> DriftReport:
    """Evidently's ``DataDriftPreset`` on a fixed-seed sample of at most ``sample_rows`` rows per side,
    with the decision's rules and thresholds, saved as HTML (``html_path``) and as Evidently's JSON
    snapshot beside it. ``scores`` (reference, current) add the scores' drift; ``decision`` opens the
    page with the decision, its per-feature table and which count decides.

    Columns without a value on a side are left out (Evidently refuses them).
    """
    check_columns(reference, current, features)
    features = list(dict.fromkeys(features))
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    ref, cur = reference[features], current[features]
    if scores is not None:  # sampled with their rows
        ref, cur = ref.assign(**{PREDICTION: scores[0]}), cur.assign(**{PREDICTION: scores[1]})
    ref, cur = _sample(ref, sample_rows, seed), _sample(cur, sample_rows, seed)
    kinds = {f: feature_kind(f, ref[f], cur[f], categorical=categorical) for f in features}
    usable = [f for f in features if ref[f].notna().any() and cur[f].notna().any()]
    numeric = [f for f in usable if kinds[f] == "numeric"]
    cats = [f for f in usable if kinds[f] == "categorical"]
    # Category dtypes as plain objects: Evidently's plots and value counts expect values, not codes.
    ref = ref.astype({f: object for f in cats})
    cur = cur.astype({f: object for f in cats})
    ks, ks_or_psi = stat_tests(cfg)
    psi_numeric = [f for f in numeric if f in cfg.psi_numeric_columns]
    metrics: list[Any] = [
        DataDriftPreset(
            columns=usable,
            drift_share=cfg.drifted_share,
            num_method=ks,
            cat_method="psi",
            per_column_method={f: ks_or_psi for f in psi_numeric} or None,
            num_threshold=cfg.ks_pvalue,
            cat_threshold=cfg.psi_threshold,
            per_column_threshold={f: cfg.psi_threshold for f in psi_numeric} or None,
        )
    ]
    scored = scores is not None and ref[PREDICTION].notna().any() and cur[PREDICTION].notna().any()
    if scored:  # beside the preset: the scores are no feature and stay out of its count
        metrics.append(ValueDrift(column=PREDICTION, method="psi", threshold=cfg.prediction_psi_threshold))
    columns = [*usable, PREDICTION] if scored else usable
    definition = DataDefinition(
        numerical_columns=[*numeric, PREDICTION] if scored else numeric, categorical_columns=cats
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # Evidently correlates all numeric columns for its plots; a column that is constant in a
        # window (month in a 7-day window) makes numpy warn about 0/0. The correlation is NaN, harmless.
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        snapshot = Report(metrics, include_tests=True).run(
            Dataset.from_pandas(cur[columns], data_definition=definition),
            Dataset.from_pandas(ref[columns], data_definition=definition),
        )
        page = snapshot.get_html_str(as_iframe=False)
    report = _read_snapshot(snapshot.dict(), html_path, len(ref), len(cur))
    if decision is not None:
        report.notes.extend(reconcile(decision, report))
        page = page.replace("<body>", "<body>" + decision_html(decision, report), 1)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page)
    snapshot.save_json(str(report.snapshot_json))
    return report


def snapshot_statements(data: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """What an Evidently snapshot (``Snapshot.dict()``) states: per column its ValueDrift method, score
    and verdict (its test FAILed = drift), and DriftedColumnsCount's ``{"count", "share"}``."""
    failed = {t["metric_config"]["params"].get("column") for t in data["tests"] if t["status"] == "FAIL"}
    columns, count = {}, {"count": 0.0, "share": 0.0}
    for m in data["metrics"]:
        kind = m["config"].get("type", "")
        if kind.endswith(":ValueDrift"):
            col = m["config"]["column"]
            columns[col] = {"method": m["config"]["method"], "score": float(m["value"]), "drifted": col in failed}
        elif kind.endswith(":DriftedColumnsCount"):
            count = m["value"]
    return columns, count


def _read_snapshot(data: dict[str, Any], html_path: Path, ref_rows: int, cur_rows: int) -> DriftReport:
    columns, count = snapshot_statements(data)
    tested = [c for c in columns if c != PREDICTION]
    return DriftReport(
        html=html_path,
        snapshot_json=html_path.with_suffix(".evidently.json"),
        columns=columns,
        drifted_count=int(count["count"]),
        column_count=len(tested),
        drifted_share=float(count["share"]),
        reference_rows=ref_rows,
        current_rows=cur_rows,
    )


# --- the decision on the page ---------------------------------------------------------------------------


def reconcile(decision: DriftResult, report: DriftReport) -> list[str]:
    """Which count decides, and every reason the report's count differs from the decision's."""
    n = decision.feature_count
    notes = [
        f"Evergreen's decision ({decision.drifted_count} of {n} features drifted, {decision.drifted_share:.0%}) "
        f"is computed on all {decision.current_rows} rows of the window and is the one that acts "
        "(retraining event, history); Evidently's report below applies the same tests and thresholds."
    ]
    untestable = [r for r in decision.table if r["kind"] != "prediction" and r["note"]]
    if untestable:
        listed = ", ".join(
            f"{r['feature']} ({r['note']}: {'drifted' if r['drifted'] else 'not drifted'})" for r in untestable
        )
        notes.append(f"Evidently cannot test a column without values on a side; its count leaves out {listed}.")
    if report.current_rows < decision.current_rows or report.reference_rows < decision.reference_rows:
        notes.append(
            f"The report ran on a fixed-seed sample ({report.current_rows} of {decision.current_rows} current rows, "
            f"{report.reference_rows} of {decision.reference_rows} reference rows; drift.report_sample_rows), "
            "so a feature near a threshold can fall on the other side."
        )
    if (report.drifted_count, report.column_count) == (decision.drifted_count, n):
        notes.append(f"Both count {decision.drifted_count} of {n}.")
    else:
        notes.append(
            f"Evidently counts {report.drifted_count} of {report.column_count}; the decision's "
            f"{decision.drifted_count} of {n} decides."
        )
    return notes


def decision_html(decision: DriftResult, report: DriftReport) -> str:
    """The decision as a section on top of Evidently's page: verdict, reasons, which count decides
    and the per-feature table (pandas renders it)."""
    verdict = "DRIFT DETECTED" if decision.drifted else "no drift"
    items = "".join(f"<li>{html.escape(r)}</li>" for r in decision.reasons) or "<li>no rule fired</li>"
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in report.notes)
    table = pd.DataFrame(decision.table).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)
    return (
        '<section id="evergreen-decision" style="font-family:sans-serif;margin:16px;padding:12px;'
        'border:2px solid #888;border-radius:6px">'
        f"<h2>Evergreen drift decision: {verdict} (severity {decision.severity:.2f})</h2>"
        f"<ul>{items}</ul>{notes}"
        f"<details><summary>Per-feature decision table</summary>{table}</details></section>"
    )


def decision_record(summary: dict[str, Any], decision: DriftResult, report: DriftReport | None) -> str:
    """The decision as JSON: the flow's summary, the per-feature table and what the report states."""
    body = {**summary, "table": decision.table, "evidently": report.as_dict() if report else None}
    return json.dumps(body, indent=1, default=str)


def check_run(
    summary: dict[str, Any], decision: DriftResult, report: DriftReport, record: str, flow_run: str
) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """A drift check's MLflow run: its tags, its metrics (the share charts over checks) and its
    files ``{artifact path: text}``: the report, the decision record, Evidently's snapshot."""
    tags = {
        "evergreen.kind": "drift-check",
        "evergreen.model_name": str(summary["model_name"]),
        "evergreen.champion_version": str(summary["champion_version"]),
        "evergreen.drift.as_of": str(summary["as_of"]),
        "evergreen.drift.status": str(summary["status"]),
        "evergreen.flow_run": flow_run,
    }
    metrics = {
        "drift.drifted_count": float(decision.drifted_count),
        "drift.feature_count": float(decision.feature_count),
        "drift.drifted_share": decision.drifted_share,
        "drift.severity": decision.severity,
        "drift.report_drifted_count": float(report.drifted_count),
    }
    texts = {
        REPORT_ARTIFACT: report.html.read_text(),
        "drift/decision.json": record,
        "drift/evidently_snapshot.json": report.snapshot_json.read_text(),
    }
    return tags, metrics, texts
