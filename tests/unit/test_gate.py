import numpy as np
import pandas as pd
import pytest

from evergreen.config import GateConfig
from evergreen.gate import decide


def _holdout(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    frame = pd.DataFrame({"origin": rng.choice(["EWR", "JFK", "LGA"], n), "carrier": rng.choice(["AA", "UA"], n)})
    good = np.clip(0.45 * y + rng.normal(0.28, 0.2, n), 0.01, 0.99)
    weak = np.clip(0.25 * y + rng.normal(0.38, 0.2, n), 0.01, 0.99)
    return frame, y, good, weak


CFG = GateConfig(
    floors={"roc_auc": 0.6},
    n_bootstrap=100,
    max_secondary_regression={},
    slices=["origin", "carrier"],
    slice_min_support=200,
)


def test_cold_start_promotes_on_floors_or_holds_by_rule():
    frame, y, good, _ = _holdout()
    assert decide(frame, y, good, None, CFG).passed
    held = decide(frame, y, good, None, CFG.model_copy(update={"cold_start": "hold"}))
    assert not held.passed and held.cold_start and any("cold-start" in r for r in held.reasons)


def test_floor_failure_blocks_even_cold_start():
    frame, y, _, _ = _holdout()
    noise = np.random.default_rng(5).random(len(y))
    d = decide(frame, y, noise, None, CFG)
    assert not d.passed and "FAIL floor:roc_auc" in " ".join(d.reasons)


def test_better_challenger_passes_and_identical_one_fails():
    frame, y, good, weak = _holdout()
    assert decide(frame, y, good, weak, CFG, "1").passed
    same = decide(frame, y, good, good, CFG, "1")
    assert not same.passed
    assert any(r.startswith("FAIL improvement:roc_auc") for r in same.reasons)


def test_regression_on_one_slice_blocks_promotion():
    frame, y, good, weak = _holdout()
    challenger = good.copy()
    ewr = (frame["origin"] == "EWR").to_numpy()
    challenger[ewr] = np.random.default_rng(9).random(ewr.sum())  # useless on EWR, better elsewhere
    champion = np.where(ewr, good, weak)
    d = decide(frame, y, challenger, champion, CFG.model_copy(update={"min_improvement": -1.0}), "1")
    assert not d.passed
    assert any(r.startswith("FAIL no-regression:slices") and "origin=EWR" in r for r in d.reasons)


def test_secondary_metric_regression_blocks_promotion():
    frame, y, good, _ = _holdout()
    overconfident = np.where(good > 0.5, 0.999, 0.001)  # same ranking quality, terrible log loss
    cfg = CFG.model_copy(update={"min_improvement": -1.0, "max_secondary_regression": {"log_loss": 0.01}})
    d = decide(frame, y, overconfident, good, cfg, "1")
    assert any(r.startswith("FAIL no-regression:log_loss") for r in d.reasons)


def test_one_class_holdout_is_an_error():
    frame, y, good, _ = _holdout(100)
    with pytest.raises(ValueError, match="one class"):
        decide(frame, np.zeros_like(y), good, None, CFG)


def test_unknown_slice_column_is_named():
    frame, y, good, weak = _holdout()
    with pytest.raises(KeyError, match="tailnum"):
        decide(frame, y, good, weak, CFG.model_copy(update={"slices": ["tailnum"]}), "1")


def test_a_problem_without_slices_is_gated_on_the_rest():
    frame, y, good, weak = _holdout()
    d = decide(frame, y, good, weak, CFG.model_copy(update={"slices": []}), "1")
    assert d.passed and d.slices == []
    assert any(r.startswith("PASS no-regression:slices: 0 of 0") for r in d.reasons), d.reasons
