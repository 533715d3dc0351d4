import numpy as np
from sklearn.metrics import roc_auc_score

from evergreen.evaluation import _rank_groups, metrics, paired_bootstrap_auc_diff, weighted_auc


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.5 * y + rng.normal(0.25, 0.3, n), 0, 1)
    weak = np.clip(0.2 * y + rng.normal(0.4, 0.3, n), 0, 1)
    return y, np.round(good, 2), np.round(weak, 2)  # rounding creates ties


def test_weighted_auc_with_unit_weights_matches_sklearn_including_ties():
    y, good, _ = _data()
    g, k = _rank_groups(good)
    assert abs(weighted_auc(y.astype(float), g, k, np.ones(len(y))) - roc_auc_score(y, good)) < 1e-12


def test_weighted_auc_with_counts_equals_auc_of_repeated_rows():
    y, good, _ = _data(500)
    w = np.random.default_rng(1).integers(0, 3, len(y)).astype(float)
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    g, k = _rank_groups(good)
    assert abs(weighted_auc(y.astype(float), g, k, w) - roc_auc_score(y[rep], good[rep])) < 1e-12


def test_bootstrap_separates_better_model_and_not_identical_one():
    y, good, weak = _data()
    better = paired_bootstrap_auc_diff(y, good, weak, 200, 0.95, seed=3)
    assert better.lower > 0.05 and better.lower <= better.mean <= better.upper
    same = paired_bootstrap_auc_diff(y, good, good, 200, 0.95, seed=3)
    assert same.lower == same.upper == 0.0
    worse = paired_bootstrap_auc_diff(y, weak, good, 200, 0.95, seed=3)
    assert worse.upper < 0


def test_metrics_are_finite_for_extreme_probabilities():
    m = metrics(np.array([0, 1, 1, 0]), np.array([0.0, 1.0, 1.0, 1.0]))
    assert all(np.isfinite(v) for v in m.values())
