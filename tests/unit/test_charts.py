"""The training flow's SVG pictures: well-formed, one mark per value, colours that follow the gate's rules."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from evergreen.charts import RED, TEAL, gate_chart, history_chart, importance_chart, nice_ticks
from evergreen.config import load_config
from evergreen.gate import decide
from tests.conftest import ROOT

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on malformed markup


def text_of(root: ET.Element) -> str:
    return " ".join(t.text or "" for t in root.iter(f"{NS}text"))


def bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (0.712, 0.745), (-0.031, 0.012), (3.0, 1234.0)])
def test_ticks_are_round_even_and_inside_the_range(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert 3 <= len(ticks) <= 11
    assert lo - 1e-12 <= ticks[0] and ticks[-1] <= hi + 1e-12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 5))


def test_ticks_reject_a_non_finite_range():
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0.0, float("nan"))


def test_history_has_a_point_per_trial_and_a_best_so_far_line_that_never_drops():
    values = [0.70, 0.72, 0.71, None, 0.74, 0.73]
    trials = [
        {"number": i, "state": "PRUNED" if i == 2 else "COMPLETE" if v is not None else "FAIL", "value": v}
        for i, v in enumerate(values)
    ]
    root = parse(history_chart(trials))
    points = list(root.iter(f"{NS}circle"))
    assert len(points) == 5  # the failed trial has no value to plot
    line = root.find(f"{NS}polyline")
    assert line is not None
    ys = [float(p.split(",")[1]) for p in line.attrib["points"].split()]
    assert all(b <= a for a, b in zip(ys, ys[1:], strict=False))  # SVG y grows downwards
    assert "best 0.7400" in text_of(root) and "4 complete, 1 pruned" in text_of(root)


def test_importances_are_sorted_bars_proportional_to_their_value():
    root = parse(importance_chart({"lambda_l1": 0.1, "learning_rate": 0.6, "num_leaves": 0.3}))
    rects = bars(root)
    assert [r.find(f"{NS}title").text.split(":")[0] for r in rects] == ["learning_rate", "num_leaves", "lambda_l1"]
    widths = [float(r.attrib["width"]) for r in rects]
    assert np.allclose(np.array(widths) / widths[0], [1.0, 0.5, 1 / 6], atol=0.01)


def _holdout(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"origin": rng.choice(["EWR", "JFK", "LGA"], n), "carrier": rng.choice(["AA", "B6", "UA"], n)})
    signal = rng.normal(size=n)
    y = (signal + rng.normal(size=n) > 0.8).astype(int)
    frame["delayed"] = y
    return frame, signal


def test_gate_picture_marks_the_slice_that_breaks_the_rule_in_red():
    gate = load_config(ROOT / "configs" / "default.yaml").gate
    frame, signal = _holdout()
    champion = 1 / (1 + np.exp(-signal))
    challenger = champion.copy()
    jfk = (frame["origin"] == "JFK").to_numpy()
    challenger[jfk] = np.random.default_rng(1).random(jfk.sum())  # no skill left on JFK flights
    d = decide(frame, frame["delayed"].to_numpy(), challenger, champion, gate, "3")
    root = parse(gate_chart(d, gate.max_slice_regression))
    assert "gate FAIL" in text_of(root)
    slice_bars = {r.find(f"{NS}title").text.split(" ")[0]: r.attrib["fill"] for r in bars(root) if "=" in r[0].text}
    assert slice_bars["origin=JFK"] == RED and slice_bars["origin=EWR"] == TEAL
    for s in (s for s in d.slices if s["supported"]):  # red exactly where the rule is broken
        broken = s["delta"] < -gate.max_slice_regression
        assert s["regressed"] == broken  # the gate's own mark, which the picture reads
        assert slice_bars[f"{s['slice']}={s['value']}"] == (RED if broken else TEAL)
    metric_bars = [r for r in bars(root) if "=" not in r[0].text]
    assert len(metric_bars) == 2 * len(d.challenger)  # challenger and champion side by side


def test_cold_start_gate_picture_shows_each_slice_auc():
    gate = load_config(ROOT / "configs" / "default.yaml").gate
    frame, signal = _holdout()
    d = decide(frame, frame["delayed"].to_numpy(), 1 / (1 + np.exp(-signal)), None, gate, None)
    root = parse(gate_chart(d, gate.max_slice_regression))
    assert "gate PASS (cold start)" in text_of(root)
    slice_bars = [r for r in bars(root) if "=" in r[0].text]
    assert len(slice_bars) == sum(s["supported"] for s in d.slices) == 6
    assert {r.attrib["fill"] for r in slice_bars} == {TEAL}
    assert len([r for r in bars(root) if "=" not in r[0].text]) == len(d.challenger)
