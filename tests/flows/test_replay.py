"""A short replay on the real engine, once per example: three weeks, tiny trial budget, its own model
names next to the shared features. Asserts the mechanics (every week scored, retrains only where each policy says,
champions carried from week to week, files and artifacts written), not the quality."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from evergreen import registry
from evergreen.replay import ALWAYS, EVERGREEN, STATIC, STRATEGIES
from tests.conftest import write_config

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

WEEKS = 3


@pytest.fixture(scope="module")
def result(example_env):
    from flows.replay import replay

    env, small = example_env, example_env["example"].sections
    sections = {
        **small,
        "tuning": {**small["tuning"], "n_trials": 2, "max_boost_rounds": 100, "threads": 1},
        # mechanics, not quality: floors that any model clears, so every strategy starts with a champion
        "gate": {**small["gate"], "floors": {"roc_auc": 0.5, "pr_auc": 0.0, "log_loss": 5.0, "brier": 1.0}},
        "registry": {**small["registry"], "model_name": "replay-test", "experiment": "replay-tests"},
        # any score shift is drift, and a 10-day cooldown from the initial fit: the first weekly check
        # (7 days in) is held by the cooldown, the second (14 days in) retrains
        "drift": {"prediction_psi_threshold": 1e-9, "cooldown_days": 10, "report_sample_rows": 500},
    }
    path = write_config(env["tmp"] / "replay.yaml", env["cfg"].home, env["name"], **sections)
    start = env["example"].first_as_of
    out = replay(config=str(path), start=start, weeks=WEEKS, output=str(env["tmp"] / "replay-out"), stem="r")
    return {**out, "start": start}


def _weeks(result, strategy):
    return [r for r in result["weeks"] if r["strategy"] == strategy]


def test_every_week_is_scored_by_every_strategy(result):
    assert [(r["week"], r["strategy"]) for r in result["weeks"]] == [
        (w, s) for w in range(1, WEEKS + 1) for s in STRATEGIES
    ]
    starts = sorted({r["start"] for r in result["weeks"]})
    assert starts[0].startswith(result["start"]) and len(starts) == WEEKS
    for r in result["weeks"]:
        assert r["rows"] > 1000 and 0 < r["label_rate"] < 1 and r["version"], r
        assert all(math.isfinite(r[m]) for m in ("roc_auc", "pr_auc", "log_loss", "brier")), r
        assert r["error"] == "", r["error"]
    for w in range(1, WEEKS + 1):  # one week's flights, one delay rate, whatever the model
        assert len({(r["rows"], r["label_rate"]) for r in result["weeks"] if r["week"] == w}) == 1


def test_static_never_retrains(result):
    rows = _weeks(result, STATIC)
    assert not any(r["retrained"] or r["promoted"] for r in rows)
    assert {r["version"] for r in rows} == {"1"}


def test_always_retrain_retrains_and_promotes_every_week_but_the_last(result):
    rows = _weeks(result, ALWAYS)
    assert [r["retrained"] for r in rows] == [True] * (WEEKS - 1) + [False]
    assert [r["promoted"] for r in rows] == [True] * (WEEKS - 1) + [False]
    for this, nxt in zip(rows, rows[1:], strict=False):  # the new model serves the next week, gate or not
        assert nxt["version"] == this["new_version"]


def test_evergreen_retrains_only_on_drift_and_its_gate_decides(result):
    rows = _weeks(result, EVERGREEN)
    assert [r["drift"] for r in rows] == ["cooldown", "drift", ""]
    assert [r["retrained"] for r in rows] == [r["drift"] == "drift" for r in rows]
    retrained = rows[1]
    assert retrained["gate"] in ("pass", "fail") and retrained["promoted"] == (retrained["gate"] == "pass")
    assert rows[2]["version"] == (retrained["new_version"] if retrained["promoted"] else rows[1]["version"])
    c = registry.client(result["settings"]["tracking_uri"])
    name = result["settings"]["models"][EVERGREEN]
    reasons = sorted(v.tags["evergreen.reason"] for v in c.search_model_versions(f"name='{name}'"))
    assert reasons == ["drift", "manual"]  # the initial fit and the one drift-triggered retrain


def test_summary_counts_match_the_weeks(result):
    by = {r["strategy"]: r for r in result["summary"]}
    assert (by[STATIC]["retrains"], by[ALWAYS]["retrains"], by[EVERGREEN]["retrains"]) == (0, WEEKS - 1, 1)
    assert by[EVERGREEN]["drift_detections"] == 1
    assert all(r["weeks_scored"] == WEEKS and r["errors"] == 0 for r in by.values())
    assert by[STATIC]["compute_seconds"] == 0 and by[ALWAYS]["compute_seconds"] > 0
    assert all(r["initial_fit_seconds"] > 0 for r in by.values())
    assert {c["check"] for c in result["target"]["checks"]} and isinstance(result["target"]["met"], bool)


def test_files_and_artifacts(result):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    paths = result["paths"]
    assert len(pd.read_csv(paths["weekly_csv"])) == WEEKS * len(STRATEGIES)
    assert len(pd.read_csv(paths["summary_csv"])) == len(STRATEGIES)
    doc = json.loads(open(paths["json"]).read())
    assert doc["settings"]["n_trials"] == 2 and doc["settings"]["weeks"] == WEEKS
    assert open(paths["png"], "rb").read(4) == b"\x89PNG"
    keys = ["replay-summary", "replay-strategies", "replay-weeks", f"replay-progress-{result['run_id']}"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    assert {a.key for a in found} == set(keys)
    progress = next(a for a in found if a.key.startswith("replay-progress"))
    assert float(progress.data) == 100.0


def test_help_and_a_bad_start_date(capsys):
    from flows.replay import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--weeks" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--start", "someday"])
    assert e.value.code == 2 and "not a date" in capsys.readouterr().err
