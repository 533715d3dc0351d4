"""The drift flow on real data: the champion's own reference vs a current window, real Evidently,
events recorded by the real Prefect test server. Uses its own model name next to the shared features."""

from __future__ import annotations

import time

import httpx
import pandas as pd
import pytest

from evergreen import registry
from evergreen.config import load_config
from tests.conftest import write_config
from tests.flows.conftest import SMALL

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

MODEL = "drift-test-model"


def _config(env, name: str, **drift) -> str:
    sections = {**SMALL, "registry": {**SMALL["registry"], "model_name": MODEL, "experiment": "drift-tests"}}
    if drift:
        sections["drift"] = drift
    return str(write_config(env["tmp"] / f"{name}.yaml", env["cfg"].home, **sections))


def _drift_events(since: pd.Timestamp) -> list[dict]:
    from prefect.settings import PREFECT_API_URL

    body = {
        "filter": {
            "event": {"name": ["evergreen.drift.detected"]},
            "occurred": {"since": since.isoformat(), "until": pd.Timestamp.now(tz="UTC").isoformat()},
        },
        "limit": 50,
    }
    r = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=10)
    r.raise_for_status()
    return [e for e in r.json()["events"] if e["resource"]["prefect.resource.id"] == f"evergreen.model.{MODEL}"]


def _events_after(since: pd.Timestamp, expect: int, as_of: str | None = None) -> list[dict]:
    """Drift events since ``since`` (for one as_of: an earlier test's event may land late)."""
    for _ in range(20):  # events are persisted asynchronously by the server
        found = [e for e in _drift_events(since) if as_of is None or e["payload"]["as_of"].startswith(as_of)]
        if len(found) >= expect:
            break
        time.sleep(0.5)
    return found


@pytest.fixture(scope="module")
def no_champion_result(env):
    from flows.drift import drift

    return drift(config=_config(env, "drift"), as_of="2013-12-20")


@pytest.fixture(scope="module")
def champion(env, no_champion_result):
    from flows.training import training

    return training(config=_config(env, "drift"), as_of="2013-04-01", reason="manual")


def test_without_champion_the_flow_is_a_documented_no_op(no_champion_result):
    assert no_champion_result["status"] == "no-champion" and no_champion_result["event"] is None
    assert "run the training flow first" in no_champion_result["reasons"][0]


def test_december_against_a_spring_champion_drifts_and_emits_one_event(env, champion):
    from flows.drift import drift

    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    out = drift(config=_config(env, "drift"), as_of="2013-12-20")
    assert out["status"] == "drift", out["reasons"]
    assert out["drifted_features"] and 0 < out["severity"] <= 1
    assert out["champion_version"] == champion["version"]
    events = _events_after(since, 1)
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["as_of"].startswith("2013-12-20") and payload["drifted_features"] == out["drifted_features"]
    assert payload["window_start"].startswith("2013-12-13")
    html = open(out["report"]).read()
    assert html.lstrip().lower().startswith("<!doctype html") and len(html) > 10_000  # Evidently's HTML report
    assert all(f in html for f in out["drifted_features"][:3])


def test_a_window_from_the_champions_own_training_period_is_calm(env, champion):
    from flows.drift import drift

    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    out = drift(config=_config(env, "drift"), as_of="2013-03-10")
    assert out["status"] == "calm", out["reasons"]
    assert out["event"] is None and _events_after(since, 0, as_of="2013-03-10") == []


def test_cooldown_suppresses_the_event_right_after_a_retrain(env, champion):
    from flows.drift import drift

    # Thresholds so loose that everything drifts: only the cooldown can hold the event back.
    cfg = _config(env, "hair-trigger", ks_pvalue=0.99, ks_min_statistic=0.0001, drifted_share=0.01, cooldown_days=7)
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    out = drift(config=cfg, as_of="2013-04-05")
    assert out["status"] == "cooldown", out["reasons"]
    assert any("cooldown" in r for r in out["reasons"]) and out["event"] is None
    assert _events_after(since, 0, as_of="2013-04-05") == []


def test_an_empty_window_is_a_documented_no_op(env, champion):
    from flows.drift import drift

    out = drift(config=_config(env, "drift"), as_of="2014-06-01")
    assert out["status"] == "no-data" and out["event"] is None and out["rows"] == 0
    assert "drift.min_rows" in out["reasons"][0]


def test_missing_feature_columns_are_named(env, champion):
    from tasks.drift import load_champion, score_current

    cfg = load_config(_config(env, "drift"))
    champ = load_champion.fn(cfg)
    current = registry.reference_sample(cfg.tracking_uri, champ).drop(columns=["carrier_delay_rate_7d"])
    with pytest.raises(ValueError, match="carrier_delay_rate_7d"):
        score_current.fn(champ, current)
