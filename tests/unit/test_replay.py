"""Replay core on small inputs: the week plan, derived configs, weekly metrics, summary, target, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from evergreen.config import load_config
from evergreen.replay import (
    ALWAYS,
    EVERGREEN,
    STATIC,
    STRATEGIES,
    check_target,
    plan_weeks,
    summarize,
    summary_markdown,
    week_metrics,
    write_outputs,
    write_strategy_configs,
)
from tests.conftest import write_config


def test_weeks_are_consecutive_and_stop_at_the_end_of_the_data():
    plan = plan_weeks("2013-12-01", pd.Timestamp("2013-12-31 22:00", tz="UTC"))
    assert [w.number for w in plan] == [1, 2, 3, 4, 5]
    assert plan[0].start == pd.Timestamp("2013-12-01", tz="UTC")
    assert all(b.start == a.end == a.start + pd.Timedelta(days=7) for a, b in zip(plan, plan[1:], strict=False))
    assert plan[-1].start <= pd.Timestamp("2013-12-31 22:00", tz="UTC") < plan[-1].end  # the short last week


def test_weeks_can_be_capped_and_bad_input_is_refused():
    assert len(plan_weeks("2013-03-01", pd.Timestamp("2013-12-31", tz="UTC"), weeks=3)) == 3
    with pytest.raises(ValueError, match="not before the end"):
        plan_weeks("2014-02-01", pd.Timestamp("2013-12-31", tz="UTC"))
    with pytest.raises(ValueError, match="at least 1"):
        plan_weeks("2013-03-01", pd.Timestamp("2013-12-31", tz="UTC"), weeks=0)


def test_each_strategy_gets_the_base_config_with_its_own_model_name(tmp_path):
    base = load_config(
        write_config(
            tmp_path / "base.yaml",
            tmp_path / "home",
            registry={"model_name": "rp"},
            drift={"cooldown_days": 3},
            rollout={"enabled": True},
        )
    )
    paths = write_strategy_configs(base, "r1", tmp_path / "configs")
    assert set(paths) == set(STRATEGIES)
    derived = {s: load_config(p) for s, p in paths.items()}
    assert {d.registry.model_name for d in derived.values()} == {f"rp-r1-{s}" for s in STRATEGIES}
    for d in derived.values():
        assert d.home == base.home and d.tracking_uri == base.tracking_uri
        assert d.feast_repo == base.feast_repo and d.problem == base.problem
        assert d.drift == base.drift.model_copy(update={"emit_event": False})
        assert d.gate == base.gate and d.window == base.window
        assert d.rollout.enabled is False


def test_week_metrics_match_sklearn_and_are_nan_without_a_model_or_a_class():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 0])
    p = np.array([0.1, 0.8, 0.3, 0.6, 0.2, 0.4, 0.1, 0.2])
    m = week_metrics(y, p)
    assert m["rows"] == 8 and m["label_rate"] == 3 / 8
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert math.isnan(week_metrics(y, None)["roc_auc"]) and week_metrics(y, None)["label_rate"] == 3 / 8
    assert math.isnan(week_metrics(np.zeros(4), np.full(4, 0.2))["roc_auc"])


def _row(week, strategy, auc, drift="", retrained=False, gate="", promoted=False, seconds=0.0):
    start = pd.Timestamp("2013-03-01", tz="UTC") + pd.Timedelta(days=7 * (week - 1))
    return {
        "week": week,
        "start": start.isoformat(),
        "end": (start + pd.Timedelta(days=7)).isoformat(),
        "strategy": strategy,
        "version": "1",
        "rows": 100,
        "label_rate": 0.2,
        "roc_auc": auc,
        "pr_auc": auc - 0.3,
        "log_loss": 0.4,
        "brier": 0.1,
        "drift": drift,
        "retrained": retrained,
        "gate": gate,
        "promoted": promoted,
        "new_version": "",
        "seconds": seconds,
        "error": "",
    }


ROWS = [
    _row(1, STATIC, 0.70),
    _row(2, STATIC, 0.66),
    _row(3, STATIC, 0.68),
    _row(1, ALWAYS, 0.70, retrained=True, gate="fail", promoted=True, seconds=10),
    _row(2, ALWAYS, 0.74, retrained=True, gate="pass", promoted=True, seconds=12),
    _row(3, ALWAYS, 0.75),
    _row(1, EVERGREEN, 0.70, drift="drift", retrained=True, gate="fail", seconds=14),
    _row(2, EVERGREEN, 0.71, drift="drift", retrained=True, gate="pass", promoted=True, seconds=15),
    _row(3, EVERGREEN, 0.776),
]


def test_summary_counts_what_each_strategy_did():
    by = {r["strategy"]: r for r in summarize(ROWS, {STATIC: 5.0})}
    assert by[STATIC]["mean_auc"] == pytest.approx(0.68) and by[STATIC]["worst_auc"] == 0.66
    assert by[STATIC]["worst_week"] == "2013-03-08" and by[STATIC]["retrains"] == 0
    assert by[STATIC]["initial_fit_seconds"] == 5.0 and by[STATIC]["compute_seconds"] == 0
    assert by[ALWAYS]["retrains"] == by[ALWAYS]["promotions"] == 2 and by[ALWAYS]["gate_refusals"] == 0
    assert by[EVERGREEN]["drift_detections"] == 2 and by[EVERGREEN]["retrains"] == 2
    assert by[EVERGREEN]["promotions"] == 1 and by[EVERGREEN]["gate_refusals"] == 1
    assert by[EVERGREEN]["compute_seconds"] == 29.0
    assert "| evergreen |" in summary_markdown(summarize(ROWS))


def test_target_check_names_each_condition():
    t = check_target(summarize(ROWS))
    assert not t["met"]
    assert [c["passed"] for c in t["checks"]] == [True, False, True]  # 2 of 2 retrains is not a third
    assert t["checks"][0]["value"] == pytest.approx(-0.004 / 3)
    assert t["checks"][1]["value"] == 1.0 and t["checks"][2]["value"] == pytest.approx(0.146 / 3)
    almost = check_target(summarize([r for r in ROWS if not (r["strategy"] == EVERGREEN and r["week"] == 1)]))
    assert almost["checks"][1]["passed"] is False and almost["checks"][1]["value"] == 0.5


def test_outputs_are_written_and_readable(tmp_path):
    summary = summarize(ROWS)
    paths = write_outputs(
        ROWS, summary, check_target(summary), {"title": "test"}, tmp_path, "r", tmp_path / "img" / "r.png"
    )
    assert len(pd.read_csv(paths["weekly_csv"])) == 9 and len(pd.read_csv(paths["summary_csv"])) == 3
    doc = json.loads(paths["json"].read_text())
    assert doc["summary"][2]["strategy"] == EVERGREEN and len(doc["weeks"]) == 9
    assert paths["png"] == tmp_path / "img" / "r.png" and paths["png"].read_bytes()[:4] == b"\x89PNG"
