"""The serving gateway on each example: a real gateway process on 127.0.0.1 serving the example's
champion with the example's own request schema, features from its Feast online store."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from tests.conftest import free_port, running_gateway, write_config

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

MODEL = "gateway-example-model"


@pytest.fixture(scope="module")
def gateway(example_env):
    from flows.training import training
    from tasks.data import load_raw_data, prepare

    env, small = example_env, example_env["example"].sections
    port = free_port()
    sections = {
        **small,
        "registry": {**small["registry"], "model_name": MODEL, "experiment": "gateway-tests"},
        "serving": {"port": port, "reload_seconds": 1},
    }
    path = write_config(env["tmp"] / "gateway.yaml", env["cfg"].home, env["name"], **sections)
    out = training(config=str(path), as_of=env["example"].first_as_of)
    assert out["champion"] == "1", out["gate_reasons"]
    cfg = env["cfg"]
    prepared = prepare.fn(cfg, load_raw_data.fn(cfg))
    with running_gateway(path, port, env["tmp"] / "gateway-examples.log") as url:
        yield {"url": url, "cfg": cfg, "prepared": prepared}


def _rows(gateway, n: int) -> list[dict]:
    """Real requests of the example (its request fields as JSON types), asked at the end of the data,
    where the online store's latest values are the ones known (older ones were overwritten)."""
    from evergreen.features import latest_outcome

    spec = gateway["cfg"].problem
    prepared = gateway["prepared"]
    at = latest_outcome(prepared, spec).isoformat()
    sample = prepared.tail(5000).sample(n, random_state=5)
    cast = {"string": str, "number": float, "integer": int}
    return [
        {name: cast[f.type](r[name]) for name, f in spec.request.items()} | {"prediction_time": at}
        for _, r in sample.iterrows()
    ]


def test_predict_takes_the_examples_own_request_schema(gateway):
    spec = gateway["cfg"].problem
    rows = _rows(gateway, 20)
    r = httpx.post(f"{gateway['url']}/predict", json={"rows": rows, "return_features": True}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == MODEL and len(body["predictions"]) == 20
    assert [p[spec.entity_id] for p in body["predictions"]] == [row[spec.entity_id] for row in rows]
    assert all(0 < p["probability"] < 1 and p["version"] == "1" for p in body["predictions"])
    features = pd.DataFrame(body["features"])
    online = [c for c in features.columns if c not in spec.request]
    assert online and features[online].notna().any().any()  # Feast's online values reached the model


def test_a_request_outside_the_schema_is_refused_with_the_field_named(gateway):
    spec = gateway["cfg"].problem
    good = _rows(gateway, 1)[0]
    field = next(n for n in spec.request if n != spec.entity_id)
    missing = {k: v for k, v in good.items() if k != field}
    r = httpx.post(f"{gateway['url']}/predict", json={"rows": [missing]}, timeout=30)
    assert r.status_code == 422 and field in r.text
    r = httpx.post(f"{gateway['url']}/predict", json={"rows": [good | {"no_such_field": 1}]}, timeout=30)
    assert r.status_code == 422 and "no_such_field" in r.text


def test_feedback_takes_the_examples_id_and_label(gateway):
    spec = gateway["cfg"].problem
    rows = _rows(gateway, 5)
    httpx.post(f"{gateway['url']}/predict", json={"rows": rows}, timeout=60).raise_for_status()
    outcomes = [{spec.entity_id: row[spec.entity_id], spec.label: i % 2 == 0} for i, row in enumerate(rows)]
    r = httpx.post(f"{gateway['url']}/feedback", json={"outcomes": outcomes}, timeout=30)
    assert r.status_code == 200 and r.json()["matched"] == 5, r.text
    r = httpx.post(f"{gateway['url']}/feedback", json={"outcomes": [{spec.entity_id: "x", "wrong": True}]}, timeout=30)
    assert r.status_code == 422 and spec.label in r.text


def test_unknown_entities_and_stale_views_are_flagged_and_counted(gateway):
    """An entity the online store never saw gets a confident-looking probability only with a flag;
    a prediction asked long after the data (now) says which views had expired."""
    from evergreen.feature_store import get_store, join_keys

    cfg = gateway["cfg"]
    spec = cfg.problem
    keys = join_keys(get_store(cfg), cfg.features.feature_service)
    key = next(k for k in keys if k in spec.request and spec.request[k].type == "string" and k != spec.entity_id)
    known, strange = _rows(gateway, 2)
    strange[key] = "UNSEEN-0"
    r = httpx.post(f"{gateway['url']}/predict", json={"rows": [known, strange]}, timeout=60)
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    assert key in second["unknown_entities"] and key not in first["unknown_entities"]
    metrics = httpx.get(f"{gateway['url']}/metrics", timeout=30).text
    assert f'evergreen_gateway_unknown_entities_total{{key="{key}"}}' in metrics

    now = {k: v for k, v in known.items() if k != "prediction_time"}  # asked today: years after the data
    r = httpx.post(f"{gateway['url']}/predict", json={"rows": [now]}, timeout=60)
    assert r.status_code == 200 and r.json()["predictions"][0]["stale_views"], r.text
    # Asked at the end of the data, as the README's example asks, no more views have expired.
    assert set(first["stale_views"]) <= set(r.json()["predictions"][0]["stale_views"])
    assert "evergreen_gateway_stale_views_total{" in httpx.get(f"{gateway['url']}/metrics", timeout=30).text
