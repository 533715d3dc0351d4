"""Drift of a window of prediction requests against the training reference: one decision, one report.

Two implementations on purpose: the **decision** (:func:`detect_drift`) runs on the full window in
vectorised numpy (each numeric column sorted once; KS and PSI read off the sorted arrays with
``searchsorted``), ~35x faster than Evidently on 1M rows; the **report**
(:func:`evergreen.drift_report.evidently_report`) runs Evidently's ``DataDriftPreset`` with the same
rules and thresholds on a bounded, fixed-seed sample, for the HTML a person reads. The statistics are
scipy's and Evidently's, reproduced exactly (tested against both):

* KS is ``scipy.stats.ks_2samp`` with its default method (what Evidently's ``ks`` test calls);
* PSI is Evidently's ``psi`` test: despite its docstring it does not use reference quantiles. A numeric
  column whose reference has more than 20 distinct values is cut into equal-width bins over the
  pooled data with the Sturges rule (``np.histogram_bin_edges(pooled, "sturges")``); otherwise, and
  for categoricals, there is one bin per distinct value. Empty bins get a floor: a millionth of the
  smallest non-empty share when that is <= 1e-4, else 1e-4 (per side).

Missing and infinite values are dropped before testing, as Evidently does.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from evergreen.config import DriftConfig

PREDICTION = "__prediction__"
# scipy's ks_2samp(method="auto") uses the exact null distribution up to this sample size.
EXACT_KS_MAX_N = 10_000
# Evidently bins a numeric column per distinct value when its reference has at most this many.
PER_VALUE_MAX_UNIQUE = 20


@dataclass(frozen=True)
class DriftResult:
    """The decision for one window, with the evidence for every feature (``table``)."""

    drifted: bool
    severity: float
    reasons: list[str]
    drifted_features: list[str]
    drifted_share: float
    table: list[dict[str, Any]]
    reference_rows: int
    current_rows: int

    @property
    def feature_count(self) -> int:
        return sum(1 for r in self.table if r["kind"] != "prediction")

    @property
    def drifted_count(self) -> int:
        return len(self.drifted_features)

    def summary(self) -> str:
        head = f"drift {'DETECTED' if self.drifted else 'not detected'} (severity {self.severity:.2f})"
        return f"{head}: {self.drifted_count}/{self.feature_count} features drifted" + "".join(
            f"; {r}" for r in self.reasons
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- statistics on clean, sorted samples -------------------------------------------------------------


def _clean_sorted(values: Any) -> np.ndarray:
    """Finite values, sorted: one sort serves KS and PSI. NaN sorts last and -inf/+inf to the ends,
    so the finite values are a contiguous slice of the sorted array (a view, not a copy)."""
    if isinstance(values, pd.Series | pd.Index):
        x = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        x = np.asarray(values, dtype="float64")
    x = np.sort(x.ravel(), kind="quicksort")
    lo = int(np.searchsorted(x, -np.inf, side="right"))
    hi = int(np.searchsorted(x, np.inf, side="left"))
    return x[lo:hi]


def _is_integer(values: Any) -> bool:
    dtype = getattr(values, "dtype", None)
    return dtype is not None and pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _ks_sorted(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS on sorted finite samples, equal to ``scipy.stats.ks_2samp``.

    scipy evaluates F_ref - F_cur at all n1 + n2 points. Both ECDFs are step functions, so on each
    interval [r_i, r_{i+1}) between distinct reference values F_ref is constant and F_cur rises: the
    maximum is at r_i and the minimum at the last current point below r_{i+1}, where F_cur equals
    #(cur < r_{i+1}) / n2. Two ``searchsorted`` calls of the m distinct reference values into the
    large sorted current sample give every extreme with the same integers (so the same floats) as
    scipy: O(m log n2) after the sort instead of O((n1 + n2) log n).
    """
    n1, n2 = len(ref), len(cur)
    if n1 == 0 or n2 == 0:
        raise ValueError("KS needs at least one finite value in each sample")
    values, counts = _distinct(ref)
    f_ref = np.cumsum(counts) / n1  # F_ref at each distinct reference value
    cur_le = np.searchsorted(cur, values, side="right")  # #cur <= r_i
    cur_lt_next = np.append(np.searchsorted(cur, values[1:], side="left"), n2)  # #cur < r_{i+1}
    d = max(
        float(np.max(f_ref - cur_le / n2)),
        float(np.max(cur_lt_next / n2 - f_ref)),
        float(np.searchsorted(cur, values[0], side="left") / n2),  # below the first reference value
    )
    if max(n1, n2) <= EXACT_KS_MAX_N:
        # scipy's exact path is a compiled lattice-path recursion: nothing to vectorise, and its
        # cost is bounded by the sample size, so take its p-value as is.
        return d, float(stats.ks_2samp(ref, cur).pvalue)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)  # scipy's asymptotic path: the one-sample distribution at round(en)
    return d, float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _sturges_edges(lo: float, hi: float, n: int, integer: bool) -> np.ndarray:
    """``np.histogram_bin_edges(pooled, bins="sturges")`` from the pooled min, max and size only."""
    first, last = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
    width = (hi - lo) / (np.log2(n) + 1.0)
    if width:
        if integer and width < 1:
            width = 1.0
        bins = int(np.ceil((last - first) / width))
    else:
        bins = 1
    return np.linspace(first, last, bins + 1)


def _bin_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(x, edges)[0]`` for sorted x: right-open bins, the last one closed."""
    idx = np.searchsorted(x, edges, side="left")
    idx[-1] = np.searchsorted(x, edges[-1], side="right")
    return np.diff(idx)


def _distinct(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of sorted x and their counts."""
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    return x[starts], np.diff(np.r_[starts, len(x)])


def _floor(shares: np.ndarray) -> np.ndarray:
    """Evidently's fill for empty bins (per side) so that the log stays finite."""
    low = shares[shares != 0].min()
    out = shares.copy()
    out[out == 0] = low / 10**6 if low <= 0.0001 else 0.0001
    return out


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, n_ref: int, n_cur: int) -> float:
    r = _floor(ref_counts / n_ref)
    c = _floor(cur_counts / n_cur)
    return float(np.sum((r - c) * np.log(r / c)))


def _psi_sorted(ref: np.ndarray, cur: np.ndarray, bins: int | Literal["sturges"], integer: bool) -> float:
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("PSI needs at least one finite value in each sample")
    if bins == "sturges":
        ref_values, ref_counts = _distinct(ref)
        if len(ref_values) <= PER_VALUE_MAX_UNIQUE:
            cur_values, cur_counts = _distinct(cur)
            keys = np.union1d(ref_values, cur_values)
            rc = np.zeros(len(keys), dtype="int64")
            cc = np.zeros(len(keys), dtype="int64")
            rc[np.searchsorted(keys, ref_values)] = ref_counts
            cc[np.searchsorted(keys, cur_values)] = cur_counts
            return _psi_from_counts(rc, cc, len(ref), len(cur))
        edges = _sturges_edges(min(ref[0], cur[0]), max(ref[-1], cur[-1]), len(ref) + len(cur), integer)
    elif isinstance(bins, int) and bins >= 1:  # np.histogram(pooled, bins)'s edges
        edges = np.histogram_bin_edges([min(ref[0], cur[0]), max(ref[-1], cur[-1])], bins)
    else:
        raise ValueError(f"bins must be a positive int or 'sturges', got {bins!r}")
    return _psi_from_counts(_bin_counts(ref, edges), _bin_counts(cur, edges), len(ref), len(cur))


# --- public statistics ---------------------------------------------------------------------------------


def ks_test(reference: np.ndarray | pd.Series, current: np.ndarray | pd.Series) -> tuple[float, float]:
    """Two-sample KS statistic and p-value; NaN and infinite values are dropped.

    Same statistic and p-value as ``scipy.stats.ks_2samp(reference, current)`` (default method:
    exact up to 10 000 values per sample, else Smirnov's asymptotic distribution), in O(n log n) for
    one sort of each sample.
    """
    return _ks_sorted(_clean_sorted(reference), _clean_sorted(current))


def psi(
    reference: np.ndarray | pd.Series, current: np.ndarray | pd.Series, bins: int | Literal["sturges"] = "sturges"
) -> float:
    """Population stability index of a numeric column; NaN and infinite values are dropped.

    ``bins="sturges"`` is Evidently's ``psi`` stat test exactly (one bin per distinct value when the
    reference has <= 20 of them, else Sturges equal-width bins over the pooled data). An int gives
    that many equal-width bins over the pooled range instead (no Evidently equivalent).
    """
    integer = _is_integer(reference) and _is_integer(current)
    return _psi_sorted(_clean_sorted(reference), _clean_sorted(current), bins, integer)


def psi_categorical(
    ref_shares: Mapping[Hashable, float] | pd.Series, cur_shares: Mapping[Hashable, float] | pd.Series
) -> float:
    """PSI from category shares (e.g. ``value_counts(normalize=True)``), as Evidently computes it:
    one bin per category seen on either side, absent ones floored like empty bins."""
    ref_map, cur_map = dict(ref_shares), dict(cur_shares)
    keys = list(dict.fromkeys([*ref_map, *cur_map]))
    r = np.array([float(ref_map.get(k, 0.0)) for k in keys])
    c = np.array([float(cur_map.get(k, 0.0)) for k in keys])
    if not (r > 0).any() or not (c > 0).any():
        raise ValueError("PSI needs a positive share on each side")
    r, c = _floor(r), _floor(c)
    return float(np.sum((r - c) * np.log(r / c)))


# --- the decision ----------------------------------------------------------------------------------------


def feature_kind(name: str, *columns: pd.Series, categorical: Sequence[str] = ()) -> Literal["numeric", "categorical"]:
    """Categorical when the problem declares it so, or when a side is not numeric (strings, categories)."""
    if name in categorical or any(not pd.api.types.is_numeric_dtype(s.dtype) for s in columns):
        return "categorical"
    return "numeric"


def check_columns(reference: pd.DataFrame, current: pd.DataFrame, features: list[str]) -> None:
    for side, frame in (("current", current), ("reference", reference)):
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise ValueError(f"{side} data lacks feature column(s) {missing}; it has {list(frame.columns)}")


def _row(feature: str, kind: str, method: str, nulls: tuple[float, float], **values: Any) -> dict[str, Any]:
    """One table row, JSON-ready (None, not NaN). Without values on one side there is no statistic:
    a feature with reference values but none in the window has vanished, and that counts as drift."""
    row: dict[str, Any] = {"feature": feature, "kind": kind, "method": method}
    row |= {k: None if values.get(k) is None else float(values[k]) for k in ("statistic", "p_value", "psi")}
    row |= {"drifted": bool(values.get("drifted")), "null_share_reference": nulls[0], "null_share_current": nulls[1]}
    row["note"] = None
    if nulls[0] == 1.0 or nulls[1] == 1.0:
        row["drifted"] = nulls[0] < 1.0
        row["note"] = "no values in the current window" if row["drifted"] else "no values in the reference"
    return row


def _numeric_row(name: str, ref_col: Any, cur_col: Any, cfg: DriftConfig, prediction: bool = False) -> dict[str, Any]:
    ref, cur = _clean_sorted(ref_col), _clean_sorted(cur_col)
    nulls = (1 - len(ref) / max(len(ref_col), 1), 1 - len(cur) / max(len(cur_col), 1))
    use_psi = prediction or name in cfg.psi_numeric_columns
    kind, method = ("prediction", "psi") if prediction else ("numeric", "ks+psi" if use_psi else "ks")
    if len(ref) == 0 or len(cur) == 0:
        return _row(name, kind, method, nulls)
    d, p = _ks_sorted(ref, cur)
    # PSI is reported for every numeric feature (cheap on sorted data) but decides only where asked.
    value = _psi_sorted(ref, cur, "sturges", _is_integer(ref_col) and _is_integer(cur_col))
    if prediction:
        drifted = value >= cfg.prediction_psi_threshold
    else:
        drifted = (p <= cfg.ks_pvalue and d >= cfg.ks_min_statistic) or (use_psi and value >= cfg.psi_threshold)
    return _row(name, kind, method, nulls, statistic=d, p_value=p, psi=value, drifted=drifted)


def _categorical_row(name: str, ref_col: pd.Series, cur_col: pd.Series, cfg: DriftConfig) -> dict[str, Any]:
    def shares(s: pd.Series) -> tuple[dict[Hashable, float], float]:
        if pd.api.types.is_float_dtype(s.dtype):  # Evidently drops infinities with the NaNs
            s = s.replace([np.inf, -np.inf], np.nan)
        vc = s.value_counts(dropna=True, sort=False)
        vc = vc[vc > 0]  # a categorical dtype lists unused categories with count 0
        total = int(vc.sum())
        null_share = 1 - total / max(len(s), 1)
        return {k: v / total for k, v in zip(vc.index.astype(object), vc.to_numpy(), strict=True)}, null_share

    (ref_shares, null_ref), (cur_shares, null_cur) = shares(ref_col), shares(cur_col)
    if not ref_shares or not cur_shares:
        return _row(name, "categorical", "psi", (null_ref, null_cur))
    value = psi_categorical(ref_shares, cur_shares)
    return _row(name, "categorical", "psi", (null_ref, null_cur), psi=value, drifted=value >= cfg.psi_threshold)


def _describe(row: dict[str, Any]) -> str:
    if row.get("note"):
        return f"{row['feature']} ({row['note']})"
    parts = []
    if row["statistic"] is not None and row["method"] != "psi":
        parts.append(f"KS D={row['statistic']:.3f}, p={row['p_value']:.2g}")
    if row["psi"] is not None and "psi" in row["method"]:
        parts.append(f"PSI={row['psi']:.3f}")
    return f"{row['feature']} ({', '.join(parts)})"


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str],
    cfg: DriftConfig,
    reference_scores: np.ndarray | None = None,
    current_scores: np.ndarray | None = None,
    categorical: Sequence[str] = (),
) -> DriftResult:
    """Decide whether the current window drifted from the reference; every threshold comes from ``cfg``.

    Per feature:
    * numeric: KS, drifted when ``p <= ks_pvalue`` AND ``D >= ks_min_statistic``. On windows of
      thousands of rows KS flags shifts far too small to matter; the effect-size floor on D keeps
      those out. Features in ``psi_numeric_columns`` are also drifted when PSI >= ``psi_threshold``;
    * categorical (in ``categorical``, the problem's list, or a non-numeric dtype): PSI >= ``psi_threshold``;
    * a feature with reference values but none in the window counts as drifted.
    Prediction (when scores are given): PSI of the scores >= ``prediction_psi_threshold`` (KS reported).

    The window drifted when the share of drifted features reaches ``drifted_share``, or a feature in
    ``key_features`` drifted, or the predictions drifted. ``severity`` is the larger of the drifted
    share and a prediction term ``min(1, PSI / (2 * prediction_psi_threshold))`` (0.5 at the
    threshold): a window whose scores moved ranks with one where half the features moved.

    Too few current rows (``cfg.min_rows``) is the caller's call: this function still decides.
    """
    check_columns(reference, current, features)
    if (reference_scores is None) != (current_scores is None):
        raise ValueError("give both reference_scores and current_scores, or neither")
    features = list(dict.fromkeys(features))
    table = []
    for name in features:
        ref_col, cur_col = reference[name], current[name]
        if feature_kind(name, ref_col, cur_col, categorical=categorical) == "categorical":
            table.append(_categorical_row(name, ref_col, cur_col, cfg))
        else:
            table.append(_numeric_row(name, ref_col, cur_col, cfg))
    drifted_features = [r["feature"] for r in table if r["drifted"]]
    share = len(drifted_features) / len(features) if features else 0.0

    reasons = []
    if features and share >= cfg.drifted_share:
        listed = ", ".join(_describe(r) for r in table if r["drifted"])
        reasons.append(
            f"{len(drifted_features)} of {len(features)} features drifted "
            f"({share:.0%} >= {cfg.drifted_share:.0%}): {listed}"
        )
    keys = [r for r in table if r["drifted"] and r["feature"] in cfg.key_features]
    if keys:
        reasons.append("key feature drifted: " + ", ".join(_describe(r) for r in keys))

    severity = share
    if reference_scores is not None and current_scores is not None:
        pred = _numeric_row(PREDICTION, np.asarray(reference_scores), np.asarray(current_scores), cfg, prediction=True)
        table.append(pred)
        if pred["drifted"]:
            detail = pred["note"] or f"score PSI {pred['psi']:.3f} >= {cfg.prediction_psi_threshold}"
            reasons.append(f"prediction drift: {detail}")
        if pred["psi"] is not None:
            severity = max(severity, min(1.0, pred["psi"] / (2 * cfg.prediction_psi_threshold)))
        elif pred["drifted"]:  # the scores vanished
            severity = max(severity, 0.5)
    return DriftResult(
        drifted=bool(reasons),
        severity=float(min(1.0, severity)),
        reasons=reasons,
        drifted_features=drifted_features,
        drifted_share=share,
        table=table,
        reference_rows=len(reference),
        current_rows=len(current),
    )


def in_cooldown(as_of: pd.Timestamp, last_retrain: pd.Timestamp | None, cooldown_days: float) -> bool:
    """Whether a retraining event at ``as_of`` would come too soon after the last retrain (data time)."""
    return last_retrain is not None and as_of - last_retrain < pd.Timedelta(days=cooldown_days)
