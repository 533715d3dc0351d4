"""The training loop end to end on each example's real data: real Prefect engine (temporary server),
real MLflow SQLite store, real Feast repo and GX suites, all under a temp home."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from evergreen import registry
from evergreen.validation import ValidationFailed
from tests.conftest import ROOT, write_config

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine


def state(cfg):
    c = registry.client(cfg.tracking_uri)
    name = cfg.registry.model_name
    versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{name}'"))
    return versions, registry.aliases(c, name), len(registry.history(c, name))


@pytest.fixture(scope="module")
def first(example_env):
    from flows.training import training

    return training(config=example_env["path"], as_of=example_env["example"].first_as_of, reason="manual")


@pytest.fixture(scope="module")
def second(example_env, first):
    from flows.training import training

    as_of = example_env["example"].second_as_of
    return training(config=example_env["path"], as_of=as_of, n_trials="3", reason="schedule")


def test_features_flow_builds_all_views(env):
    assert set(env["features"]["views"]) == {
        "origin_weather",
        "aircraft_history",
        "carrier_stats",
        "route_stats",
        "plane_attributes",
    }
    assert env["features"]["rows"]["aircraft_history"] > 300_000
    online = __import__("evergreen.feature_store", fromlist=["x"]).online_features(
        env["cfg"], [{"origin": "JFK", "tailnum": "N14228", "carrier": "UA", "route": "EWR-IAH"}]
    )
    assert online["carrier_delay_rate_30d"].notna().all()  # the backfill really wrote the online store


def _asof_oracle(
    entities: pd.DataFrame, table: pd.DataFrame, key: str, ttl: pd.Timedelta | None, entity_id: str
) -> pd.DataFrame:
    """The point-in-time value computed independently: latest row at or before the request, within TTL."""
    left = entities.sort_values("event_timestamp").astype({"event_timestamp": "datetime64[ns, UTC]"})
    right = table.drop(columns="created").rename(columns={"event_timestamp": "_ts"}).sort_values("_ts")
    right["_ts"] = right["_ts"].astype("datetime64[ns, UTC]")
    out = pd.merge_asof(
        left, right, left_on="event_timestamp", right_on="_ts", by=key, direction="backward", tolerance=ttl
    )
    return out.set_index(entity_id).drop(columns="_ts")


def test_feast_point_in_time_join_matches_an_independent_oracle_on_real_data(example_env):
    """Every feature of the service, for 3000 real requests, equals the latest value of its view at or
    before the request within the view's TTL, computed independently with pandas."""
    from evergreen import feature_store
    from evergreen.features import entity_frame
    from tasks.data import load_raw_data, prepare

    cfg = example_env["cfg"]
    prepared = prepare.fn(cfg, load_raw_data.fn(cfg))
    end = pd.Timestamp(example_env["example"].first_as_of, tz="UTC")
    store = feature_store.get_store(cfg)
    keys = feature_store.join_keys(store, cfg.features.feature_service)
    ents = entity_frame(prepared, cfg.problem, end - pd.Timedelta(days=31), end, keys)
    ents = ents.sample(3000, random_state=1).reset_index(drop=True)
    got = feature_store.historical_features(cfg, ents).set_index(cfg.problem.entity_id)
    service = store.get_feature_service(cfg.features.feature_service)
    checked = 0
    for proj in service.feature_view_projections:
        view = store.get_feature_view(proj.name)
        (key,) = [c.name for c in view.entity_columns]
        ttl = view.ttl if view.ttl else None
        table = pd.read_parquet(feature_store.path_of(cfg, view.name))
        want = _asof_oracle(ents, table, key, ttl, cfg.problem.entity_id)
        for col in [f.name for f in proj.features]:
            a, b = got.loc[want.index, col], want[col]
            same = (a == b) | (a.isna() & b.isna()) | (a.astype(str) == b.astype(str))
            assert same.all(), f"{view.name}.{col}: {(~same).sum()} rows differ"
            assert b.notna().any(), f"{view.name}.{col}: never known in the window: the check would be empty"
            checked += 1
    assert checked == len(feature_store.feature_names(cfg)) >= 5


def test_cold_start_registers_and_promotes_the_first_model(example_env, first):
    cfg = example_env["cfg"]
    assert first["gate"] == "pass" and first["version"] == "1" and first["champion"] == "1"
    versions, aliases, _ = state(cfg)
    assert versions == [1] and aliases == {"champion": "1", "challenger": "1"}
    assert first["holdout"]["roc_auc"] > cfg.gate.floors["roc_auc"]
    assert any("cold-start" in r for r in first["gate_reasons"])


def test_model_is_logged_with_lineage_reference_and_probabilities(example_env, first):
    cfg = example_env["cfg"]
    mlflow.set_tracking_uri(cfg.tracking_uri)
    run = mlflow.get_run(first["mlflow_run_id"])
    assert run.info.experiment_id == mlflow.get_experiment_by_name(cfg.registry.experiment).experiment_id
    assert run.info.artifact_uri.startswith((cfg.home / "mlartifacts").as_uri())  # never ./mlruns of the working dir
    for tag in ("git_sha", "config_hash", "lock_hash", "data_window", "data_fingerprint", "feature_service", "reason"):
        assert run.data.tags[f"evergreen.{tag}"], tag
    assert run.data.tags["evergreen.data_window"].endswith(f"{example_env['example'].first_as_of}T00:00:00+00:00")
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "reference")}
    assert files == {"reference/profile.json", "reference/reference_sample.parquet"}
    client = mlflow.MlflowClient()
    tuning = {a.path for a in client.list_artifacts(run.info.run_id, "tuning")}
    assert tuning == {"tuning/optimization_history.png", "tuning/param_importances.png", "tuning/trials.json"}
    # The search as MLflow charts it: one step per completed trial, the best so far never falling.
    trials = pd.read_json(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="tuning/trials.json"), orient="split"
    )
    complete = trials[trials["state"] == "COMPLETE"].sort_values("number")
    values = sorted(client.get_metric_history(run.info.run_id, "tuning.trial_valid_auc"), key=lambda m: m.step)
    assert [m.step for m in values] == complete["number"].tolist()
    assert np.allclose([m.value for m in values], complete["value"])  # the table's JSON keeps 10 digits
    best = sorted(client.get_metric_history(run.info.run_id, "tuning.best_valid_auc_so_far"), key=lambda m: m.step)
    assert np.allclose([m.value for m in best], np.maximum.accumulate(complete["value"]))
    gate = {a.path for a in client.list_artifacts(run.info.run_id, "gate")}
    assert gate == {"gate/decision.json", "gate/decision.png"}
    picture = Path(first["decision_record"]).with_suffix(".png")
    logged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="gate/decision.png")
    assert Path(logged).read_bytes() == picture.read_bytes()  # the decision record's picture, logged as is
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "holdout.roc_auc" in run.data.metrics and "stage_seconds.tune" in run.data.metrics
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion")
    sample = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="reference/reference_sample.parquet")
    )
    p = model.predict(sample)
    assert p.shape == (len(sample),) and ((p > 0) & (p < 1)).all() and len(np.unique(p)) > 100
    assert np.allclose(p, sample["score"])  # the logged model scores exactly as at training time
    reqs = mlflow.pyfunc.get_model_dependencies(f"models:/{cfg.registry.model_name}/1")
    assert "lightgbm==" in open(reqs).read()


def test_second_run_is_gated_against_the_champion(example_env, first, second):
    cfg = example_env["cfg"]
    assert second["version"] == "2"
    versions, aliases, _ = state(cfg)
    assert versions == [1, 2] and aliases["challenger"] == "2"
    assert any(r.split(" ", 1)[1].startswith("improvement:roc_auc") for r in second["gate_reasons"])
    assert any("no-regression:slices" in r for r in second["gate_reasons"])
    if second["gate"] == "pass":
        assert aliases["champion"] == "2" and aliases["previous_champion"] == "1"
    else:
        assert aliases["champion"] == "1" and "previous_champion" not in aliases
    c = registry.client(cfg.tracking_uri)
    tags = c.get_model_version(cfg.registry.model_name, "2").tags
    assert tags["evergreen.gate.verdict"] == second["gate"] and tags["evergreen.gate.champion_version"] == "1"
    assert tags["evergreen.reason"] == "schedule"
    record = __import__("json").loads(open(second["decision_record"]).read())
    assert record["verdict"] == second["gate"] and record["champion"] is not None


def test_each_version_carries_its_model_card(example_env, first, second):
    """The registry's description of a version is its card: the windows' dates and row counts, the
    holdout metrics against the champion, the verdict and its reasons, the features, the lineage."""
    cfg = example_env["cfg"]
    c = registry.client(cfg.tracking_uri)
    for out in (first, second):
        card = c.get_model_version(cfg.registry.model_name, out["version"]).description
        run = c.get_run(out["mlflow_run_id"])
        windows = {k.removeprefix("window."): v[:10] for k, v in run.data.params.items() if k.startswith("window.")}
        assert windows["start"] in card and windows["holdout_start"] in card and windows["end"] in card
        assert f"| {out['train_rows']} |" in card and f"| {out['holdout_rows']} |" in card
        assert f"**Gate verdict: {out['gate'].upper()}**" in card
        assert all(reason in card for reason in out["gate_reasons"])
        features = registry.load_champion(cfg.tracking_uri, cfg.registry.model_name).features
        assert all(f"`{f}`" in card for f in features) and f"Features ({len(features)})" in card
        assert f"`{cfg.problem.label}`" in card and cfg.problem.intended_use in card
        assert out["mlflow_run_id"] in card and run.data.tags["evergreen.data_fingerprint"] in card
        assert f"{out['holdout']['roc_auc']:.4f}" in card and len(card) <= 5000
        logged = mlflow.artifacts.download_artifacts(
            run_id=out["mlflow_run_id"], artifact_path="model_card.md", tracking_uri=cfg.tracking_uri
        )
        assert open(logged).read().startswith(card.split("*(cut", 1)[0].rstrip())  # whole card on the run
    assert "cold start" in c.get_model_version(cfg.registry.model_name, first["version"]).description
    assert "| champion v1 |" in c.get_model_version(cfg.registry.model_name, second["version"]).description


def test_the_champion_loads_from_the_configs_registry_whatever_the_process_points_at(example_env, second, tmp_path):
    """A process that used another store before (MLflow exports its registry URI to the environment,
    so a worker started from it inherits that too) still loads the config's champion."""
    cfg = example_env["cfg"]
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'another-store.db'}")
    try:
        champion = registry.load_champion(cfg.tracking_uri, cfg.registry.model_name)
    finally:
        mlflow.set_registry_uri(cfg.tracking_uri)
    assert champion is not None and champion.version == str(second["champion"])


def test_identical_rerun_resumes_the_study_and_fails_the_gate(example_env, second):
    from flows.training import training

    cfg = example_env["cfg"]
    c = registry.client(cfg.tracking_uri)
    if registry.alias_version(c, cfg.registry.model_name, "champion") != "2":
        registry.promote(c, cfg.registry.model_name, "2", "make the same model champion", None)
    again = training(config=example_env["path"], as_of=example_env["example"].second_as_of, n_trials=3, reason="manual")
    assert again["tuning_trials"] == second["tuning_trials"]  # the persisted study already had its trials
    assert second["tuning_search_seconds"] > 0 and again["tuning_search_seconds"] == 0  # no trial ran again
    assert second["tuning_search_cpu_seconds"] > 0 and again["tuning_search_cpu_seconds"] == 0
    assert again["gate"] == "fail"  # the same model is not measurably better than itself
    assert any(r.startswith("FAIL improvement:roc_auc") and "[+0.0000, +0.0000]" in r for r in again["gate_reasons"])
    _, after, _ = state(cfg)
    assert after["champion"] == "2" and after["challenger"] == again["version"] == "3"


def test_corrupted_batch_stops_the_run_and_changes_nothing(example_env, second):
    """A value the raw suite rejects, in the run's own batch, stops the run before anything is trained."""
    from evergreen.problem import as_utc, load_problem

    cfg = example_env["cfg"]
    spec = example_env["example"]
    table, column, value = spec.corrupt
    raw = load_problem(cfg).load_tables(cfg.data.source)
    data = example_env["tmp"] / "corrupt"
    data.mkdir()
    for name, frame in raw.tables.items():  # the user's own export: one file per table
        frame = frame.copy()
        if name == table:  # ten days of the run's own batch
            t = as_utc(frame[cfg.problem.tables[name].time_column], cfg.problem.time_zone)
            end = pd.Timestamp(spec.second_as_of, tz="UTC")
            frame[column] = frame[column].astype("float64")
            frame.loc[((t >= end - pd.Timedelta(days=10)) & (t < end)).to_numpy(), column] = value
        frame.to_parquet(data / f"{name}.parquet")
    one_file = {"tables": {name: {"files": [name]} for name in raw.tables}}
    path = write_config(
        example_env["tmp"] / "corrupt.yaml",
        cfg.home,
        example_env["name"],
        data={"source": str(data)},
        problem=one_file,
        **spec.sections,
    )
    before = state(cfg)
    runs_before = len(mlflow.search_runs(experiment_names=[cfg.registry.experiment]))
    assert runs_before >= 3  # the earlier training runs are in the configured experiment
    from flows.training import training

    with pytest.raises(ValidationFailed) as e:
        training(config=str(path), as_of=spec.second_as_of)
    assert f"expect_column_values_to_be_between on column '{column}'" in str(e.value)
    assert state(cfg) == before  # versions, aliases and alias history untouched
    assert len(mlflow.search_runs(experiment_names=[cfg.registry.experiment])) == runs_before  # nothing trained


def test_rollback_command_moves_champion_back_and_records_it(example_env, second):
    from evergreen.cli import main

    cfg = example_env["cfg"]
    c = registry.client(cfg.tracking_uri)
    name = cfg.registry.model_name
    if registry.alias_version(c, name, "previous_champion") is None:  # the second run did not promote
        registry.promote(c, name, "2", "set up a rollback target", None)
    champion = registry.alias_version(c, name, "champion")
    target = registry.alias_version(c, name, "previous_champion")
    assert main(["--config", example_env["path"], "rollback", "--reason", "canary errors"]) == 0
    assert registry.alias_version(c, name, "champion") == target
    last = [m for m in registry.history(c, name) if m.alias == "champion"][-1]
    assert (last.from_version, last.to_version, last.reason) == (champion, target, "rollback: canary errors")


def test_shell_entry_point_has_help_and_clear_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "flows.training", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--as-of" in out.stdout and "--n-trials" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("window:\n  train_dayz: 3\n")
    out = subprocess.run(
        [sys.executable, "-m", "flows.training", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert "bad.yaml" in out.stderr and "window.train_dayz" in out.stderr


def test_flow_parameters_are_validated_before_anything_runs(env):
    """Deployments and triggers pass parameters as JSON: Prefect casts them by the flow's types
    (``n_trials="3"`` above became 3) and rejects what does not fit, before the flow body runs."""
    from prefect.exceptions import ParameterTypeError

    from flows.training import training

    cfg = env["cfg"]
    before = state(cfg)
    for bad in ({"n_trials": 0}, {"reason": "because"}, {"as_of": "the first of May"}):
        with pytest.raises(ParameterTypeError):
            training(config=env["path"], **bad)
    assert state(cfg) == before
