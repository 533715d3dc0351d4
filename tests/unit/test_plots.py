"""The gate's picture: one bar per value, red exactly where the gate found a slice broke its rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba

from evergreen.config import load_config
from evergreen.gate import decide
from evergreen.plots import FAIL_COLOR, PASS_COLOR, plot_gate
from tests.conftest import ROOT


def _holdout(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"origin": rng.choice(["EWR", "JFK", "LGA"], n), "carrier": rng.choice(["AA", "B6", "UA"], n)})
    signal = rng.normal(size=n)
    frame["delayed"] = (signal + rng.normal(size=n) > 0.8).astype(int)
    return frame, signal


def _slice_bars(fig):  # label -> (value, colour) of the right panel's bars
    ax = fig.axes[1]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    return {label: (bar.get_width(), bar.get_facecolor()) for label, bar in zip(labels, ax.patches, strict=True)}


def test_gate_picture_marks_the_slice_that_breaks_the_rule_in_red(tmp_path):
    gate = load_config(ROOT / "configs" / "default.yaml").gate
    frame, signal = _holdout()
    champion = 1 / (1 + np.exp(-signal))
    challenger = champion.copy()
    jfk = (frame["origin"] == "JFK").to_numpy()
    challenger[jfk] = np.random.default_rng(1).random(jfk.sum())  # no skill left on JFK flights
    d = decide(frame, frame["delayed"].to_numpy(), challenger, champion, gate, "3")
    fig = plot_gate(d, gate.max_slice_regression)
    assert fig.get_suptitle().startswith("gate FAIL")
    bars = _slice_bars(fig)
    assert bars["origin=JFK"][1] == to_rgba(FAIL_COLOR) and bars["origin=EWR"][1] == to_rgba(PASS_COLOR)
    for s in (s for s in d.slices if s["supported"]):  # red exactly where the rule is broken
        broken = s["delta"] < -gate.max_slice_regression
        assert s["regressed"] == broken  # the gate's own mark, which the picture reads
        value, colour = bars[f"{s['slice']}={s['value']}"]
        assert np.isclose(value, s["delta"]) and colour == to_rgba(FAIL_COLOR if broken else PASS_COLOR)
    assert len(fig.axes[0].patches) == 2 * len(d.challenger)  # challenger and champion side by side
    fig.savefig(tmp_path / "gate.png")
    assert (tmp_path / "gate.png").read_bytes()[:4] == b"\x89PNG"


def test_cold_start_gate_picture_shows_each_slice_auc():
    gate = load_config(ROOT / "configs" / "default.yaml").gate
    frame, signal = _holdout()
    d = decide(frame, frame["delayed"].to_numpy(), 1 / (1 + np.exp(-signal)), None, gate, None)
    fig = plot_gate(d, gate.max_slice_regression)
    assert fig.get_suptitle() == "gate PASS (cold start)"
    bars = _slice_bars(fig)
    assert len(bars) == sum(s["supported"] for s in d.slices) == 6
    assert {colour for _, colour in bars.values()} == {to_rgba(PASS_COLOR)}
    aucs = {f"{s['slice']}={s['value']}": s["challenger_auc"] for s in d.slices if s["supported"]}
    assert all(np.isclose(bars[k][0], v) for k, v in aucs.items())
    assert len(fig.axes[0].patches) == len(d.challenger)
