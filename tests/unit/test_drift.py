"""Drift statistics against scipy and Evidently themselves (no mocks), and the decision rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evergreen.config import DriftConfig
from evergreen.drift import PREDICTION, detect_drift, ks_test, psi, psi_categorical
from evergreen.drift_report import KS_OR_PSI_TEST, KS_TEST, evidently_report

# No key features unless a test sets them: the share rule alone decides.
CFG = DriftConfig(key_features=[], drifted_share=0.3)  # one of three features drifting is drift here
REAL_NUMERIC = ["distance", "dep_hour", "day_of_week", "month"]
REAL_CATEGORICAL = ["carrier", "origin", "dest"]


def _pair(n1: int, n2: int, ties: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n1), rng.normal(0.08, 1.1, size=n2)
    return (np.round(a * 2), np.round(b * 2)) if ties else (a, b)


@pytest.mark.parametrize(
    "n1,n2,ties",
    [
        (8, 11, False),
        (300, 250, True),
        (4000, 4000, False),  # equal sizes: scipy's other exact formula
        (9000, 10000, True),  # largest exact case
        (20000, 600, False),  # asymptotic from here on (max size > 10 000)
        (20000, 150000, True),
        (10001, 10001, False),
    ],
)
def test_ks_test_equals_scipy_ks_2samp(n1, n2, ties):
    a, b = _pair(n1, n2, ties, seed=n1 + n2)
    expected = stats.ks_2samp(a, b)
    d, p = ks_test(a, b)
    assert d == pytest.approx(expected.statistic, abs=1e-9)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_ks_test_drops_missing_and_infinite_values():
    a, b = _pair(3000, 12000, False, seed=3)
    dirty_a = np.concatenate([a, [np.nan, np.inf]])
    dirty_b = np.concatenate([[np.nan, -np.inf], b, [np.nan]])
    assert ks_test(dirty_a, dirty_b) == ks_test(a, b)
    with pytest.raises(ValueError, match="finite"):
        ks_test(a, np.array([np.nan]))


def test_psi_equals_evidently_psi_score(tmp_path):
    """A tiny Evidently report with PSI on every column: continuous (> 20 distinct values, Sturges
    bins on the pooled data), integer, few-valued numeric (one bin per value, new values in the
    current window) and categorical with a category the reference never saw."""
    rng = np.random.default_rng(11)
    ref = pd.DataFrame(
        {
            "cont": rng.normal(size=1500),
            "ints": rng.integers(0, 300, 1500),
            "few": rng.integers(0, 6, 1500).astype("float64"),
            "cat": rng.choice(["a", "b", "c", "d"], 1500, p=[0.5, 0.3, 0.15, 0.05]),
        }
    )
    cur = pd.DataFrame(
        {
            "cont": rng.normal(0.4, 1.2, size=1000),
            "ints": rng.integers(50, 400, 1000),
            "few": rng.integers(2, 9, 1000).astype("float64"),
            "cat": rng.choice(["a", "b", "c", "e"], 1000, p=[0.25, 0.25, 0.25, 0.25]),
        }
    )
    ref.loc[:20, "cont"] = np.nan  # dropped on both sides
    numeric = ["cont", "ints", "few"]
    cfg = CFG.model_copy(update={"psi_numeric_columns": numeric})
    html = tmp_path / "sub" / "psi.html"
    ev = evidently_report(ref, cur, [*numeric, "cat"], cfg, html, sample_rows=5000).columns
    assert html.is_file() and html.stat().st_size > 10_000
    assert ev["cat"]["method"] == "psi" and all(ev[c]["method"].startswith(KS_OR_PSI_TEST) for c in numeric)
    for col in numeric:
        assert psi(ref[col].to_numpy(), cur[col].to_numpy()) == pytest.approx(ev[col]["score"], rel=1e-12), col
    mine = psi_categorical(ref["cat"].value_counts(normalize=True), cur["cat"].value_counts(normalize=True))
    assert mine == pytest.approx(ev["cat"]["score"], rel=1e-12)
    decided = {r["feature"]: r["drifted"] for r in detect_drift(ref, cur, [*numeric, "cat"], cfg).table}
    assert {c: ev[c]["drifted"] for c in ev} == decided


def test_psi_equals_evidently_stat_test_on_large_integer_columns():
    """21 distinct integers in 600 000 rows: Sturges' width drops below 1 and numpy widens it to 1
    for integer data (20 bins, not 21). Evidently's registered ``psi`` test sees the same."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(21)
    a, b = rng.integers(0, 21, 300_000), rng.binomial(20, 0.45, 300_000)
    for ref, cur in ((a, b), (a.astype("float64"), b.astype("float64"))):
        ref_s, cur_s = pd.Series(ref), pd.Series(cur)
        test = get_stattest(ref_s, cur_s, ColumnType.Numerical, "psi")
        score = test(ref_s, cur_s, ColumnType.Numerical, 0.2).drift_score
        assert psi(ref, cur) == pytest.approx(score, rel=1e-12)
    assert psi(a, b) != pytest.approx(psi(a.astype("float64"), b.astype("float64")), rel=1e-6)


def test_detect_drift_agrees_with_evidently_on_real_flights(prepared_flights, tmp_path):
    """Spring vs December on the real request fields: the same sample and the same rules (Evergreen's
    own tests registered in Evidently) give the same scores, the same per-column flags and the same
    count, with no effect-size floor and with the default one."""
    f = prepared_flights[[*REAL_NUMERIC, *REAL_CATEGORICAL]]
    month = f["month"]
    # 12 000 reference rows: KS takes scipy's asymptotic path, the one our own code computes.
    ref = f[month.between(4, 5).to_numpy()].sample(12_000, random_state=1)
    cur = f[(month == 12).to_numpy()].sample(3_000, random_state=2)
    cfg = CFG.model_copy(update={"ks_min_statistic": 1e-9, "psi_numeric_columns": ["distance"]})
    features = [*REAL_NUMERIC, *REAL_CATEGORICAL]

    report = evidently_report(ref, cur, features, cfg, tmp_path / "real.html", sample_rows=20_000)
    ev = report.columns
    res = detect_drift(ref, cur, features, cfg)
    rows = {r["feature"]: r for r in res.table}
    assert set(ev) == set(rows) == set(features)
    for col in features:
        e, r = ev[col], rows[col]
        if e["method"].startswith(KS_TEST):
            assert e["score"] == pytest.approx(r["p_value"], rel=1e-9, abs=1e-300), col
        else:  # PSI: categoricals, and distance (listed in psi_numeric_columns)
            assert e["score"] == pytest.approx(r["psi"], rel=1e-9), col
        assert e["drifted"] == r["drifted"], col
    flags = [e["drifted"] for e in ev.values()]
    assert any(flags) and not all(flags), "the comparison should see both outcomes"
    assert "month" in res.drifted_features and len(res.drifted_features) > 1
    assert (report.drifted_count, report.column_count) == (res.drifted_count, res.feature_count)
    # With the default effect-size floor only the real change (another season) remains, in both.
    cfg = CFG.model_copy(update={"psi_numeric_columns": ["distance"]})
    floored = detect_drift(ref, cur, features, cfg)
    assert floored.drifted_features == ["month"]
    report = evidently_report(ref, cur, features, cfg, tmp_path / "floored.html", sample_rows=20_000)
    assert [c for c, e in report.columns.items() if e["drifted"]] == ["month"] and report.drifted_count == 1


def _normal_frames(n_ref: int, n_cur: int, shift: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def frame(n: int, loc: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "x": rng.normal(loc, 1.0, n),
                "y": rng.normal(0.0, 1.0, n),
                "carrier": rng.choice(["AA", "B6", "UA"], n, p=[0.4, 0.3, 0.3]),
            }
        )

    return frame(n_ref, 0.0), frame(n_cur, shift)


def test_shift_is_detected_and_identical_distributions_are_not():
    ref, cur = _normal_frames(5000, 8000, shift=0.6)
    res = detect_drift(ref, cur, ["x", "y", "carrier"], CFG)
    assert res.drifted and res.drifted_features == ["x"]
    assert res.severity == pytest.approx(1 / 3)
    assert "1 of 3 features drifted" in res.reasons[0] and "x (KS D=" in res.reasons[0]

    ref, same = _normal_frames(5000, 8000, shift=0.0)
    calm = detect_drift(ref, same, ["x", "y", "carrier"], CFG)
    assert not calm.drifted and calm.drifted_features == [] and calm.reasons == [] and calm.severity == 0.0
    assert not detect_drift(ref, ref, ["x", "y", "carrier"], CFG).drifted
    row = {r["feature"]: r for r in calm.table}
    assert row["x"]["method"] == "ks" and row["carrier"]["method"] == "psi" and row["carrier"]["statistic"] is None


def test_tiny_shift_on_a_huge_window_is_significant_but_not_drift():
    ref, cur = _normal_frames(20_000, 400_000, shift=0.04, seed=5)
    res = detect_drift(ref, cur, ["x"], CFG)
    (row,) = res.table
    assert row["p_value"] < CFG.ks_pvalue  # KS alone would call this drift ...
    assert row["statistic"] < CFG.ks_min_statistic  # ... but the effect is small
    assert not res.drifted and not row["drifted"]
    no_floor = CFG.model_copy(update={"ks_min_statistic": 1e-9})
    assert detect_drift(ref, cur, ["x"], no_floor).drifted


def test_key_feature_and_prediction_drift_decide_alone():
    ref, cur = _normal_frames(4000, 4000, shift=0.6, seed=2)
    features = ["x", "y", "carrier"]
    keyed = detect_drift(ref, cur, features, CFG.model_copy(update={"key_features": ["x"], "drifted_share": 0.9}))
    assert keyed.drifted and any(r.startswith("key feature drifted: x") for r in keyed.reasons)

    rng = np.random.default_rng(4)
    ref_s, cur_s = rng.beta(2, 5, 4000), rng.beta(4, 3, 4000)
    same = detect_drift(ref, ref, features, CFG, ref_s, cur_s)
    assert same.drifted and same.drifted_features == []
    assert same.reasons[0].startswith("prediction drift: score PSI")
    pred = same.table[-1]
    assert pred["feature"] == PREDICTION and pred["kind"] == "prediction" and pred["drifted"]
    assert pred["p_value"] < 1e-10 and 0.5 <= same.severity <= 1.0
    assert not detect_drift(ref, ref, features, CFG, ref_s, ref_s).drifted
    with pytest.raises(ValueError, match="both"):
        detect_drift(ref, cur, features, CFG, ref_s, None)


def test_new_category_and_vanished_feature_count_as_drift():
    ref, cur = _normal_frames(3000, 3000, shift=0.0, seed=8)
    cur = cur.assign(carrier=np.where(np.arange(3000) % 2 == 0, "ZZ", cur["carrier"]), y=np.nan)
    res = detect_drift(ref, cur, ["x", "y", "carrier"], CFG)
    rows = {r["feature"]: r for r in res.table}
    assert rows["carrier"]["drifted"] and rows["carrier"]["psi"] > 1
    assert rows["y"]["drifted"] and rows["y"]["note"] == "no values in the current window"
    assert rows["y"]["null_share_current"] == 1.0 and rows["y"]["statistic"] is None
    assert res.drifted_features == ["y", "carrier"]


def test_missing_feature_column_is_named():
    ref, cur = _normal_frames(100, 100, shift=0.0)
    with pytest.raises(ValueError, match=r"current data lacks feature column\(s\) \['wind_gust'\]"):
        detect_drift(ref, cur, ["x", "wind_gust"], CFG)
    with pytest.raises(ValueError, match=r"reference data lacks feature column\(s\) \['z'\]"):
        detect_drift(ref, cur.assign(z=1.0), ["x", "z"], CFG)
    with pytest.raises(ValueError, match="wind_gust"):
        evidently_report(ref, cur, ["wind_gust"], CFG, Path("unused.html"), 100)


def test_the_report_counts_what_the_decision_counts_and_names_the_difference(tmp_path):
    """Evidently's DriftedColumnsCount (read back from its saved JSON snapshot) equals the decision's
    count on the tested columns; a column whose values vanished is the decision's alone, and the
    page opens with the decision and says which count decides."""
    import json

    ref, cur = _normal_frames(3000, 2000, shift=0.8, seed=5)
    ref["z"], cur["z"] = np.linspace(0, 1, 3000), np.nan  # vanished from the window: drifted, untestable
    features = ["x", "y", "z", "carrier"]
    rng = np.random.default_rng(1)
    scores = rng.beta(2, 5, 3000), rng.beta(2, 3, 2000)
    res = detect_drift(ref, cur, features, CFG, reference_scores=scores[0], current_scores=scores[1])
    html = tmp_path / "d.html"
    report = evidently_report(ref, cur, features, CFG, html, sample_rows=5000, scores=scores, decision=res)

    assert res.drifted_features == ["x", "z"] and res.feature_count == 4
    saved = json.loads(report.snapshot_json.read_text())
    (count,) = [m["value"] for m in saved["metrics"] if m["config"]["type"].endswith(":DriftedColumnsCount")]
    assert count["count"] == report.drifted_count == res.drifted_count - 1  # z: no values to test
    assert report.column_count == 3 and count["share"] == pytest.approx(1 / 3)
    pred = next(r for r in res.table if r["kind"] == "prediction")
    assert report.columns[PREDICTION]["score"] == pytest.approx(pred["psi"], rel=1e-9)
    assert report.columns[PREDICTION]["drifted"] == pred["drifted"]
    notes = " ".join(report.notes)
    assert "leaves out z (no values in the current window: drifted)" in notes
    assert "Evidently counts 1 of 3; the decision's 2 of 4 decides" in notes
    page = html.read_text()
    assert page.index('id="evergreen-decision"') < page.index('<div id="root_metric')  # before Evidently's
    assert "Evidently counts 1 of 3" in page and "2 of 4 features drifted" in page

    # Without the untestable column both count the same, and the page says so.
    res = detect_drift(ref, cur, ["x", "y", "carrier"], CFG)
    report = evidently_report(ref, cur, ["x", "y", "carrier"], CFG, html, sample_rows=5000, decision=res)
    assert report.drifted_count == res.drifted_count == 1 and report.notes[-1] == "Both count 1 of 3."
