"""The model card renders what it is given: windows, counts, metrics against the champion, the gate's
verdict and reasons, the features, intended use, limitations and lineage; and it fits the registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evergreen.config import GateConfig, load_config
from evergreen.gate import decide
from evergreen.model_card import MAX_DESCRIPTION, Lineage, fit_description, render_model_card
from evergreen.training import Windows
from tests.conftest import example_config

WINDOWS = Windows(
    start=pd.Timestamp("2015-01-01", tz="UTC"),
    holdout_start=pd.Timestamp("2015-03-01", tz="UTC"),
    validation_start=pd.Timestamp("2015-02-15", tz="UTC"),
    end=pd.Timestamp("2015-03-08", tz="UTC"),
)
LINEAGE = Lineage("run123", "fp456", "flow789", "abc", "cfg", "http://ui/#/experiments/1/runs/run123")


@pytest.fixture(scope="module")
def spec():
    return load_config(example_config("dot2015")).problem


def _decision(with_champion: bool):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 4000)
    new = np.clip(y * 0.3 + rng.uniform(0, 0.7, 4000), 0.01, 0.99)
    old = np.clip(y * 0.1 + rng.uniform(0, 0.9, 4000), 0.01, 0.99) if with_champion else None
    cfg = GateConfig(n_bootstrap=50)
    return decide(pd.DataFrame(index=range(4000)), y, new, old, cfg, "4" if with_champion else None)


def test_card_states_windows_metrics_verdict_features_and_lineage(spec):
    d = _decision(with_champion=True)
    card = render_model_card("m", spec, WINDOWS, 1234, 567, d, ["a", "b", "c"], LINEAGE, categorical=["b"])
    assert "| training | 2015-01-01 | 2015-03-01 | 1234 |" in card
    assert "| of which tuning | 2015-02-15 | 2015-03-01 |" in card
    assert "| holdout (out of time) | 2015-03-01 | 2015-03-08 | 567 |" in card
    auc, old = d.challenger["roc_auc"], d.champion["roc_auc"]
    assert f"| roc_auc | {auc:.4f} | {old:.4f} | {auc - old:+.4f} (better) |" in card
    assert "| metric | this version | champion v4 | change |" in card
    assert f"**Gate verdict: {d.verdict.upper()}** (against champion v4)" in card
    assert all(f"- {r}" in card for r in d.reasons)
    assert card.rstrip().endswith("`a`, `b` (categorical), `c`") and "## Features (3)" in card
    assert spec.intended_use in card and spec.limitations in card and f"`{spec.label}`" in card
    assert "[run123](http://ui/#/experiments/1/runs/run123)" in card and "`fp456`" in card and "`flow789`" in card


def test_cold_start_card_and_generic_intended_use(spec):
    d = _decision(with_champion=False)
    plain = spec.model_copy(update={"intended_use": "", "limitations": ""})
    card = render_model_card("m", plain, WINDOWS, 10, 5, d, ["a"], LINEAGE)
    assert "(cold start (no champion))" in card and "| roc_auc |" in card and "| - | - |" in card
    assert f"Scores the probability of `{spec.label}` for one `{spec.entity_id}`" in card
    assert "Judged on one out-of-time holdout only" in card


def test_a_long_card_is_cut_to_the_registry_limit_keeping_the_verdict(spec):
    d = _decision(with_champion=True)
    features = [f"feature_number_{i:04d}" for i in range(400)]
    card = render_model_card("m", spec, WINDOWS, 10, 5, d, features, LINEAGE)
    assert len(card) > MAX_DESCRIPTION
    short = fit_description(card)
    assert len(short) <= MAX_DESCRIPTION and "Gate verdict" in short and "## Lineage" in short
    assert short.rstrip().endswith("the whole card is `model_card.md` on the MLflow run)*")
    assert fit_description("small") == "small"
