"""The drift flow on each example's real data: the champion's own reference vs a current window, real
Evidently, events recorded by the real Prefect test server. Uses its own model name next to the shared
features."""

from __future__ import annotations

import time

import httpx
import pandas as pd
import pytest

from evergreen import registry
from evergreen.config import load_config
from tests.conftest import write_config

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

MODEL = "drift-test-model"


def _config(env, name: str, **drift) -> str:
    small = env["example"].sections
    sections = {**small, "registry": {**small["registry"], "model_name": MODEL, "experiment": "drift-tests"}}
    if drift:
        sections["drift"] = drift
    return str(write_config(env["tmp"] / f"{name}.yaml", env["cfg"].home, env["name"], **sections))


def _day(as_of: str, days: int) -> str:
    return (pd.Timestamp(as_of) + pd.Timedelta(days=days)).strftime("%Y-%m-%d")


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
def no_champion_result(example_env):
    from flows.drift import drift

    return drift(config=_config(example_env, "drift"), as_of=example_env["example"].drift_as_of[1])


@pytest.fixture(scope="module")
def champion(example_env, no_champion_result):
    from flows.training import training

    as_of = example_env["example"].first_as_of
    return training(config=_config(example_env, "drift"), as_of=as_of, reason="manual")


def test_without_champion_the_flow_is_a_documented_no_op(no_champion_result):
    assert no_champion_result["status"] == "no-champion" and no_champion_result["event"] is None
    assert "run the training flow first" in no_champion_result["reasons"][0]


def test_a_window_long_after_the_champions_training_drifts_and_emits_one_event(example_env, champion):
    from flows.drift import drift

    as_of = example_env["example"].drift_as_of[1]
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    out = drift(config=_config(example_env, "drift"), as_of=as_of)
    assert out["status"] == "drift", out
    assert out["drifted_features"] and 0 < out["severity"] <= 1
    assert out["champion_version"] == champion["version"]
    events = _events_after(since, 1)
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["as_of"].startswith(as_of) and payload["drifted_features"] == out["drifted_features"]
    assert payload["window_start"].startswith(_day(as_of, -7))
    assert payload["config"] == str(load_config(_config(example_env, "drift")).source_file)  # what to retrain
    html = open(out["report"]).read()
    assert html.lstrip().lower().startswith("<!doctype html") and len(html) > 10_000  # Evidently's HTML report
    assert all(f in html for f in out["drifted_features"][:3])
    assert payload["drifted_share"] == out["drifted_share"]


def test_the_report_counts_what_the_decision_counts_and_lives_in_mlflow(example_env, champion):
    """The count Evidently's report states (its saved snapshot) is the decision's, short only of
    features Evidently cannot test (no values on a side); the share is in the result; the HTML and
    the decision record are artifacts of a drift-check run in the real MLflow store, linked from the
    Prefect artifact."""
    import json

    import mlflow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.drift import drift

    cfg = load_config(_config(example_env, "drift"))
    out = drift(config=_config(example_env, "drift"), as_of=example_env["example"].drift_as_of[1])
    assert out["drifted_share"] == pytest.approx(out["drifted_count"] / out["feature_count"])
    assert out["drifted_count"] == len(out["drifted_features"]) > 0

    snapshot = json.loads(open(out["evidently"]["snapshot_json"]).read())
    (stated,) = [m["value"] for m in snapshot["metrics"] if m["config"]["type"].endswith(":DriftedColumnsCount")]
    run_id = out["mlflow"]["run_id"]
    record = json.loads(
        open(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="drift/decision.json", tracking_uri=cfg.tracking_uri
            )
        ).read()
    )
    untested = [r for r in record["table"] if r["kind"] != "prediction" and r["note"]]
    assert int(stated["count"]) == out["drifted_count"] - sum(r["drifted"] for r in untested)
    assert len([c for c in snapshot["metrics"] if c["config"]["type"].endswith(":ValueDrift")]) - 1 == (
        out["feature_count"] - len(untested)
    )  # every testable feature, and the scores
    assert record["drifted_share"] == out["drifted_share"] and record["status"] == out["status"]
    assert record["evidently"]["drifted_count"] == int(stated["count"])

    html = open(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="drift/report.html", tracking_uri=cfg.tracking_uri
        )
    ).read()
    assert 'id="evergreen-decision"' in html and f"{out['drifted_count']} of {out['feature_count']}" in html
    run = mlflow.MlflowClient(cfg.tracking_uri).get_run(run_id)
    assert run.data.tags["evergreen.kind"] == "drift-check" and run.info.status == "FINISHED"
    assert run.data.tags["evergreen.champion_version"] == champion["version"]
    assert mlflow.MlflowClient(cfg.tracking_uri).get_experiment(run.info.experiment_id).name == "drift-tests"
    assert out["mlflow"]["report_url"].endswith(f"/runs/{run_id}/artifactPath/drift/report.html")

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drift-decision"]))
        )
    markdown = max(artifacts, key=lambda a: a.created).data
    assert out["mlflow"]["report_url"] in markdown and f"share {out['drifted_share']:.1%}" in markdown


def test_a_window_from_the_champions_own_training_period_is_calm(example_env, champion):
    from flows.drift import drift

    as_of = example_env["example"].drift_as_of[0]
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    out = drift(config=_config(example_env, "drift"), as_of=as_of)
    assert out["status"] == "calm", out["reasons"]
    assert out["event"] is None and _events_after(since, 0, as_of=as_of) == []


def test_cooldown_suppresses_the_event_right_after_a_retrain(example_env, champion):
    from flows.drift import drift

    # Thresholds so loose that everything drifts: only the cooldown can hold the event back.
    cfg = _config(
        example_env, "hair-trigger", ks_pvalue=0.99, ks_min_statistic=0.0001, drifted_share=0.01, cooldown_days=7
    )
    as_of = _day(example_env["example"].first_as_of, 4)
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    out = drift(config=cfg, as_of=as_of)
    assert out["status"] == "cooldown", out["reasons"]
    assert any("cooldown" in r for r in out["reasons"]) and out["event"] is None
    assert _events_after(since, 0, as_of=as_of) == []


def test_an_empty_window_is_a_documented_no_op(example_env, champion):
    from flows.drift import drift

    out = drift(config=_config(example_env, "drift"), as_of=_day(example_env["example"].drift_as_of[1], 400))
    assert out["status"] == "no-data" and out["event"] is None and out["rows"] == 0
    assert "drift.min_rows" in out["reasons"][0]


def test_missing_feature_columns_are_named(example_env, champion):
    from tasks.drift import load_champion, score_current

    cfg = load_config(_config(example_env, "drift"))
    champ = load_champion.fn(cfg)
    missing = champ.features[-1]
    current = registry.reference_sample(cfg.tracking_uri, champ).drop(columns=[missing])
    with pytest.raises(ValueError, match=missing):
        score_current.fn(champ, current)


def test_a_config_without_events_decides_but_emits_nothing(example_env, champion):
    from flows.drift import drift

    as_of = example_env["example"].drift_as_of[1]
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    out = drift(config=_config(example_env, "quiet", emit_event=False), as_of=as_of)
    assert out["status"] == "drift" and out["event"] is None
    assert _events_after(since, 0, as_of=as_of) == []
