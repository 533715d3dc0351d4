"""Canary rollout end to end: a real gateway process on 127.0.0.1, a real MLflow SQLite store, a real
Feast online store, the real training and rollout flows, and live traffic with labels fed back."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from evergreen import registry
from evergreen.config import load_config
from evergreen.rollout import RolledBack, build_payload, encode, post_signed, sign
from tests.conftest import ROOT, free_port, running_gateway, write_config
from tests.flows.conftest import SMALL

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

MODEL = "rollout-test-model"
SECRET = f"test-secret-{uuid.uuid4().hex}"
MATERIALISED_UNTIL = pd.Timestamp("2013-06-08 12:00", tz="UTC")  # the online store's "now"
PERMISSIVE_GATE = {
    "n_bootstrap": 200,
    "min_improvement": -1.0,
    "max_secondary_regression": {"pr_auc": 1.0, "log_loss": 1.0, "brier": 1.0},
    "max_slice_regression": 1.0,
}


def _request(row) -> dict:
    return {
        "flight_id": str(row.flight_id),
        "tailnum": row.tailnum,
        "carrier": row.carrier,
        "origin": row.origin,
        "dest": row.dest,
        "distance": float(row.distance),
        "dep_hour": int(row.dep_hour),
        "day_of_week": int(row.day_of_week),
    }


class Traffic:
    """/predict calls of ``batch`` flights in a loop, each followed by the real labels on /feedback."""

    def __init__(self, url: str, flights: pd.DataFrame, batch: int = 1) -> None:
        self.url = url
        self.batch = batch
        shuffled = flights.sample(frac=1.0, random_state=11)  # users arrive in no particular order
        self.rows = [(_request(r), bool(r.delayed)) for r in shuffled.itertuples()]
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.served: list[dict] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            i = 0
            while not self.stop.is_set():
                rows = [self.rows[(i + k) % len(self.rows)] for k in range(self.batch)]
                i += self.batch
                r = c.post(f"{self.url}/predict", json={"rows": [req for req, _ in rows]})
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.served += r.json()["predictions"]
                    outcomes = [{"flight_id": req["flight_id"], "delayed": label} for req, label in rows]
                    c.post(f"{self.url}/feedback", json={"outcomes": outcomes})

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def world(env, prepared_flights, tmp_path_factory):
    from evergreen.feature_store import apply_repo, materialize
    from flows.training import training

    tmp = tmp_path_factory.mktemp("rollout")
    home = tmp / "home"
    home.mkdir()
    port = free_port()
    rollout = {
        "enabled": False,
        "webhook_url": f"http://127.0.0.1:{port}/rollout",
        "secret_env": "EVERGREEN_TEST_ROLLOUT_SECRET",
        "steps": [20, 50, 100],
        "bake_seconds": 0,
        "max_bake_seconds": 60,
        "retries": 1,
        "backoff_seconds": 0.1,
        "analysis": {"min_requests": 20, "min_labelled": 20, "max_error_rate": 0.01},
    }
    sections = {
        **SMALL,
        "registry": {**SMALL["registry"], "model_name": MODEL, "experiment": "rollout-tests"},
        "rollout": rollout,
        "serving": {"port": port, "reload_seconds": 1},
    }
    base = write_config(tmp / "base.yaml", home, **sections)
    # Two 3-trial models trained a week apart really differ in score spread (PSI near 1 on the same
    # flights): this config accepts that; the prediction-shift check has its own tests.
    auto_rollout = {**rollout, "enabled": True, "analysis": {**rollout["analysis"], "max_prediction_psi": 3.0}}
    auto = write_config(tmp / "auto.yaml", home, **{**sections, "gate": PERMISSIVE_GATE, "rollout": auto_rollout})
    cfg = load_config(base)
    shutil.copytree(env["cfg"].features_dir, cfg.features_dir)
    apply_repo(cfg)
    materialize(cfg, pd.Timestamp("1999-12-31", tz="UTC"), MATERIALISED_UNTIL)
    first = training(config=str(base), as_of="2013-06-01")
    assert first["champion"] == first["version"] == "1"

    os.environ["EVERGREEN_TEST_ROLLOUT_SECRET"] = SECRET
    window = prepared_flights[
        (prepared_flights["prediction_time"] >= MATERIALISED_UNTIL)
        & (prepared_flights["prediction_time"] < MATERIALISED_UNTIL + pd.Timedelta(hours=24))
        & (prepared_flights["tailnum"] != "UNKNOWN")
    ]
    try:
        with running_gateway(base, port, tmp / "gateway.log", {"EVERGREEN_TEST_ROLLOUT_SECRET": SECRET}) as url:
            yield {
                "cfg": cfg,
                "base": str(base),
                "auto": str(auto),
                "url": url,
                "flights": window,
                "tmp": tmp,
                "client": registry.client(cfg.tracking_uri),
            }
    finally:
        os.environ.pop("EVERGREEN_TEST_ROLLOUT_SECRET", None)


def _aliases(world) -> dict[str, str]:
    return registry.aliases(world["client"], MODEL)


def _health(world) -> dict:
    return httpx.get(f"{world['url']}/health", timeout=5).json()


def _records(world) -> list[dict]:
    folder = world["cfg"].reports_dir / "rollout"
    return sorted((json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda r: r["finished_at"])


def _wait_health(world, predicate, seconds: float = 10) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        h = _health(world)
        if predicate(h) or time.monotonic() > deadline:
            return h
        time.sleep(0.2)


def test_a_passing_gate_rolls_out_step_by_step_and_promotes(world):
    from flows.training import training

    with Traffic(world["url"], world["flights"], batch=5) as traffic:
        out = training(config=world["auto"], as_of="2013-06-08")
    v = out["version"]
    assert out["gate"] == "pass" and out["rollout"]["status"] == "promoted", out["rollout"]
    assert _aliases(world) == {"champion": v, "previous_champion": "1", "challenger": v}

    rec = _records(world)[-1]
    assert rec["version"] == v and rec["champion_before"] == "1" and rec["status"] == "promoted"
    assert [s["weight"] for s in rec["steps"]] == [20, 50, 100]
    for s in rec["steps"]:
        assert s["webhook"]["status"] == 200 and s["webhook"]["attempts"] == 1
        assert s["analysis"]["passed"] and s["analysis"]["canary"]["requests"] >= 20, s
    assert rec["promote_webhook"]["status"] == 200
    tags = world["client"].get_model_version(MODEL, v).tags
    assert tags["evergreen.rollout.status"] == "promoted"
    # The record and its picture are on the version's run, where any machine reads them.
    logged = Path(
        mlflow.artifacts.download_artifacts(tags["evergreen.rollout.record"], tracking_uri=world["cfg"].tracking_uri)
    )
    assert json.loads(logged.read_text()) == json.loads(json.dumps(rec, default=str))
    png = tags["evergreen.rollout.record"].removesuffix(".json") + ".png"
    assert (
        Path(mlflow.artifacts.download_artifacts(png, tracking_uri=world["cfg"].tracking_uri)).stat().st_size > 10_000
    )

    # Every alias move of the rollout is in the audit log, with the rollout's flow run.
    moves = [(m.alias, m.from_version, m.to_version) for m in registry.history(world["client"], MODEL)]
    assert moves[-4:] == [
        ("canary", None, v),
        ("previous_champion", None, "1"),
        ("champion", "1", v),
        ("canary", v, None),
    ]
    assert all(m.flow_run for m in registry.history(world["client"], MODEL)[-4:])

    # The gateway really served the canary during the rollout and now serves v as champion only.
    assert set(traffic.statuses) == {200}
    assert {p["version"] for p in traffic.served if p["role"] == "canary"} == {v}
    h = _wait_health(world, lambda h: h["models"]["champion"]["version"] == v)
    assert h["models"]["champion"]["version"] == v and h["models"]["canary"] is None and h["canary_weight"] == 0


def _register_faulty(world, fail_after: int) -> str:
    """A real version that answers ``fail_after`` predict calls like the champion, then raises."""
    import mlflow

    from evergreen import tracking

    cfg = world["cfg"]
    exp = tracking.setup(cfg.tracking_uri, cfg.registry.experiment, cfg.artifact_location)
    champion = registry.alias_version(world["client"], MODEL, registry.CHAMPION)
    inner = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{champion}", dst_path=str(world["tmp"] / "inner"))
    signature = mlflow.models.get_model_info(f"models:/{MODEL}/{champion}").signature
    with mlflow.start_run(experiment_id=exp) as run:
        info = mlflow.pyfunc.log_model(
            name="faulty",
            python_model=str(ROOT / "tests" / "flows" / "faulty_model.py"),
            artifacts={"inner": inner},
            model_config={"fail_after": fail_after},
            signature=signature,
            pip_requirements=["mlflow"],
        )
    return registry.register(world["client"], MODEL, info.model_uri, run.info.run_id, {})


def test_a_canary_that_fails_at_step_2_rolls_back_and_the_champion_is_unchanged(world):
    from flows.rollout import rollout

    before = _aliases(world)
    # One flight per call: step 1 ends after 20-25 canary calls, step 2 needs 20 more: errors from call 31.
    faulty = _register_faulty(world, fail_after=30)
    with Traffic(world["url"], world["flights"]) as traffic, pytest.raises(RolledBack, match="step 2"):
        rollout(config=world["base"], version=faulty, reason="test", force=True)

    rec = _records(world)[-1]
    assert rec["version"] == faulty and rec["status"] == "rolled-back"
    first, second = rec["steps"]
    assert first["analysis"]["passed"]
    assert not second["analysis"]["passed"]
    failed = [c["name"] for c in second["analysis"]["checks"] if not c["passed"]]
    assert "error_rate" in failed
    assert rec["rollback_webhook"]["status"] == 200
    assert _aliases(world) == before  # champion unchanged, no canary left
    h = _health(world)
    assert h["canary_weight"] == 0 and h["models"]["canary"] is None
    assert h["models"]["champion"]["version"] == before["champion"]
    # Callers never saw the canary's failures: the champion answered those requests.
    assert set(traffic.statuses) == {200}
    assert any(p.get("fallback") for p in traffic.served)
    assert world["client"].get_model_version(MODEL, faulty).tags["evergreen.rollout.status"] == "rolled-back"


def _signed(world, payload: dict, secret: str = SECRET, ts: float | None = None) -> tuple[bytes, dict]:
    body = encode(payload)
    stamp = str(int(ts if ts is not None else time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Evergreen-Timestamp": stamp,
        "X-Evergreen-Signature": sign(secret, stamp, body),
    }
    return body, headers


def _payload(action: str, version: str, weight: float, step: int = 1) -> dict:
    return build_payload(
        model=MODEL,
        version=version,
        previous_version=None,
        alias="canary",
        action=action,
        step=step,
        steps=3,
        weight=weight,
        gate={},
        run_link=None,
        rollout_id=uuid.uuid4().hex[:12],
    )


def test_bad_signatures_stale_timestamps_and_replays_are_refused_and_change_nothing(world):
    url = f"{world['url']}/rollout"
    before = (_health(world), _aliases(world))
    body, headers = _signed(world, _payload("rollback", "1", 0), secret="not-the-secret")
    assert httpx.post(url, content=body, headers=headers).status_code == 401
    tampered = _payload("rollback", "1", 0)
    body, headers = _signed(world, tampered)
    assert httpx.post(url, content=body.replace(b'"weight":0', b'"weight":1'), headers=headers).status_code == 401
    body, headers = _signed(world, _payload("rollback", "1", 0), ts=time.time() - 3600)
    r = httpx.post(url, content=body, headers=headers)
    assert r.status_code == 401 and "window" in r.json()["detail"]
    assert (_health(world)["canary_weight"], _aliases(world)) == (before[0]["canary_weight"], before[1])

    body, headers = _signed(world, _payload("rollback", "1", 0))
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    replay = httpx.post(url, content=body, headers=headers)
    assert replay.status_code == 409 and "replay" in replay.json()["detail"]
    # A shift for a version the registry does not name as canary is refused too.
    body, headers = _signed(world, _payload("shift", "1", 50))
    assert httpx.post(url, content=body, headers=headers).status_code == 409
    assert _health(world)["canary_weight"] == 0
    metrics = httpx.get(f"{world['url']}/metrics").text
    assert 'evergreen_gateway_webhooks_total{result="unauthorized"} 3.0' in metrics
    assert 'evergreen_gateway_webhooks_total{result="replayed"} 1.0' in metrics


def test_an_unreachable_gateway_is_retried_then_the_rollout_rolls_back(world, tmp_path):
    from flows.rollout import rollout

    dead = free_port()  # nothing listens here
    cfg = load_config(world["base"]).model_dump(mode="json", exclude={"source_file", "digest"})
    cfg["rollout"] = {**cfg["rollout"], "webhook_url": f"http://127.0.0.1:{dead}/rollout", "retries": 2}
    path = tmp_path / "dead.yaml"
    path.write_text(json.dumps(cfg))
    before = _aliases(world)
    target = next(v for v in ("1", "2") if v != before["champion"])
    t0 = time.monotonic()
    with pytest.raises(RolledBack, match="3 attempt"):
        rollout(config=str(path), version=target, reason="test", force=True)
    assert time.monotonic() - t0 >= 0.1 + 0.2  # the two backoff waits happened
    rec = _records(world)[-1]
    assert rec["status"] == "rolled-back" and rec["steps"][0]["attempts"] == 3
    assert all(a["status"] is None and "Connect" in a["error"] for a in rec["steps"][0]["attempt_log"])
    assert _aliases(world) == before
    moves = registry.history(world["client"], MODEL)[-2:]
    assert [(m.alias, m.from_version, m.to_version) for m in moves] == [
        ("canary", None, target),
        ("canary", target, None),
    ]


def test_concurrent_predictions_during_weight_changes_never_fail_and_split_by_weight(world):
    c, cfg = world["client"], world["cfg"]
    champion = _aliases(world)["champion"]
    canary = next(v for v in ("1", "2") if v != champion)
    registry.move_aliases(c, MODEL, [("canary", canary)], "test: split", None)
    url = cfg.rollout.webhook_url
    flights = world["flights"].head(1000)
    try:
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(timeout=30) as h:
                rows = [_request(r) for r in flights.itertuples()]
                i = 0
                while not stop.is_set():
                    r = h.post(f"{world['url']}/predict", json={"rows": rows[i % 50 * 20 : i % 50 * 20 + 20]})
                    statuses.append(r.status_code)
                    i += 1

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for step, weight in enumerate((10, 50, 90, 30), start=1):
            post_signed(url, _payload("shift", canary, weight, step), SECRET, timeout=10, retries=0, backoff=0)
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert statuses and set(statuses) == {200}

        # At a fixed weight, distinct keys split within tolerance, and a key always meets the same model.
        post_signed(url, _payload("shift", canary, 50, 9), SECRET, timeout=10, retries=0, backoff=0)
        rows = [
            dict(_request(r), flight_id=f"split-{i}") for i, r in enumerate(pd.concat([flights, flights]).itertuples())
        ]
        first = [
            p
            for i in (0, 1000)
            for p in httpx.post(f"{world['url']}/predict", json={"rows": rows[i : i + 1000]}, timeout=60).json()[
                "predictions"
            ]
        ]
        share = np.mean([p["role"] == "canary" for p in first])
        assert abs(share - 0.5) < 0.04, share
        again = httpx.post(f"{world['url']}/predict", json={"rows": rows[:1000]}, timeout=60).json()["predictions"]
        assert [p["version"] for p in again] == [p["version"] for p in first[:1000]]
        assert {p["version"] for p in first if p["role"] == "canary"} == {canary}
    finally:
        registry.move_aliases(c, MODEL, [("canary", None)], "test: split done", None)
        post_signed(url, _payload("rollback", canary, 0), SECRET, timeout=10, retries=0, backoff=0)
    assert _health(world)["canary_weight"] == 0


def test_online_features_served_equal_the_offline_point_in_time_values(world):
    """Training/serving skew: what the gateway fetched from the online store for a flight equals
    Feast's offline point-in-time join at the instant the online store was materialised to."""
    from evergreen.feature_store import feature_names, historical_features

    cfg = world["cfg"]
    sample = world["flights"].sample(60, random_state=3)
    at = MATERIALISED_UNTIL.isoformat()
    body = {"rows": [_request(r) | {"prediction_time": at} for r in sample.itertuples()], "return_features": True}
    served = pd.DataFrame(httpx.post(f"{world['url']}/predict", json=body, timeout=60).json()["features"])
    entities = sample[["flight_id", "origin", "tailnum", "carrier", "route"]].copy()
    entities["event_timestamp"] = MATERIALISED_UNTIL
    offline = historical_features(cfg, entities)
    names = feature_names(cfg)
    served["flight_id"] = served["flight_id"].astype("int64")
    merged = offline.merge(served, on="flight_id", suffixes=("_offline", "_online"))
    assert len(merged) == len(sample)
    mismatches = []
    for name in names:
        a, b = merged[f"{name}_offline"], merged[f"{name}_online"]
        if a.dtype == object or b.dtype == object:
            same = (a.astype("string").fillna("<NA>") == b.astype("string").fillna("<NA>")).all()
        else:
            same = np.allclose(a.astype(float), b.astype(float), equal_nan=True, rtol=0, atol=1e-9)
        if not same:
            mismatches.append(name)
    assert not mismatches, merged[[f"{m}_{s}" for m in mismatches for s in ("offline", "online")]].head()
    assert merged[[f"{n}_online" for n in names]].notna().to_numpy().mean() > 0.5  # real values, not all nulls


def test_the_secret_comes_from_a_prefect_secret_block_or_the_environment_and_is_never_recorded(world):
    from prefect.blocks.system import Secret

    from evergreen.rollout import RolloutError
    from tasks.rollout import secret_for

    name = f"rollout-secret-{uuid.uuid4().hex[:8]}"
    Secret(value=SECRET).save(name)
    cfg = world["cfg"]
    with_block = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"secret_block": name})})
    assert secret_for(with_block) == SECRET
    missing = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"secret_block": "no-such-block"})})
    with pytest.raises(RolloutError, match="no-such-block"):
        secret_for(missing)
    unset = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"secret_env": "EVERGREEN_UNSET_SECRET"})})
    with pytest.raises(RolloutError, match="EVERGREEN_UNSET_SECRET"):
        secret_for(unset)
    records = (cfg.reports_dir / "rollout").glob("*.json")
    assert all(SECRET not in p.read_text() for p in records)
    assert SECRET not in (world["tmp"] / "gateway.log").read_text()


def test_replicas_behind_a_load_balancer_agree_on_the_canary_weight(world):
    """Two gateway processes on one registry: the webhook reaches one, both serve its weight, and a
    replica started afterwards starts with it."""
    c, cfg = world["client"], world["cfg"]
    champion = _aliases(world)["champion"]
    canary = next(v for v in ("1", "2") if v != champion)
    registry.move_aliases(c, MODEL, [("canary", canary)], "test: replicas", None)
    try:
        with running_gateway(
            Path(world["base"]), free_port(), world["tmp"] / "replica.log", {"EVERGREEN_TEST_ROLLOUT_SECRET": SECRET}
        ) as replica:
            post_signed(
                cfg.rollout.webhook_url, _payload("shift", canary, 40, 1), SECRET, timeout=10, retries=0, backoff=0
            )
            assert _health(world)["canary_weight"] == 40  # the one the webhook reached, at once
            deadline = time.monotonic() + 10  # the other, on its next alias reload (reload_seconds: 1)
            while (
                httpx.get(f"{replica}/health", timeout=5).json()["canary_weight"] != 40 and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            assert httpx.get(f"{replica}/health", timeout=5).json()["canary_weight"] == 40
        assert registry.canary_weight(c, MODEL, canary) == 40
        with running_gateway(Path(world["base"]), free_port(), world["tmp"] / "late.log") as late:
            assert httpx.get(f"{late}/health", timeout=5).json()["canary_weight"] == 40
    finally:
        registry.move_aliases(c, MODEL, [("canary", None)], "test: replicas done", None)
        post_signed(cfg.rollout.webhook_url, _payload("rollback", canary, 0), SECRET, timeout=10, retries=0, backoff=0)
    assert _health(world)["canary_weight"] == 0
