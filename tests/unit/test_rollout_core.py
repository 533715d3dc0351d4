"""Webhook signing and retries, metrics parsing and canary analysis on small, constructed inputs.

The webhook tests run against a real HTTP server on 127.0.0.1 (a stdlib server in a thread)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from evergreen.canary import (
    analyse,
    delta,
    histogram_psi,
    parse_metrics,
    quantile,
    stats_for,
)
from evergreen.config import CanaryAnalysisConfig, RolloutConfig
from evergreen.rollout import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookError,
    build_payload,
    encode,
    post_signed,
    sign,
    verify,
)

SECRET = "unit-secret"


def test_signature_verifies_and_rejects_tampering_wrong_secret_and_stale_timestamps():
    body = encode({"b": 1, "a": [1, 2]})
    ts = str(int(time.time()))
    sig = sign(SECRET, ts, body)
    assert sig.startswith("sha256=") and verify(SECRET, ts, body, sig, time.time(), 300) is None
    assert "does not match" in verify(SECRET, ts, body + b" ", sig, time.time(), 300)
    assert "does not match" in verify("other", ts, body, sig, time.time(), 300)
    assert "window" in verify(SECRET, ts, body, sig, time.time() + 301, 300)
    assert "malformed" in verify(SECRET, "yesterday", body, sig, time.time(), 300)
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})  # canonical bytes


def test_payload_carries_what_a_receiver_needs_and_a_stable_idempotency_key():
    kw = dict(model="m", version="3", previous_version="2", alias="canary", action="shift", steps=4, weight=25.0)
    p = build_payload(**kw, step=2, gate={"verdict": "pass"}, run_link="http://ui/runs/1", rollout_id="abc")
    assert p["idempotency_key"] == "m:3:abc:2:shift"
    assert {"model", "version", "previous_version", "alias", "step", "weight", "gate", "run_link"} <= set(p)
    assert SECRET not in json.dumps(p)


class _Receiver(BaseHTTPRequestHandler):
    script: list[int] = []
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify(SECRET, self.headers[TIMESTAMP_HEADER], body, self.headers[SIGNATURE_HEADER], time.time(), 60)
        type(self).seen.append({"valid": ok is None, "key": self.headers["Idempotency-Key"]})
        status = type(self).script.pop(0) if type(self).script else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"status": status}).encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.script, _Receiver.seen = [], []
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/rollout"
    server.shutdown()
    server.server_close()


def _p() -> dict:
    return build_payload(
        model="m",
        version="3",
        previous_version="2",
        alias="canary",
        action="shift",
        step=1,
        steps=2,
        weight=10.0,
        gate={},
        run_link=None,
        rollout_id="r",
    )


def test_5xx_is_retried_with_backoff_and_each_attempt_is_signed_afresh(receiver):
    _Receiver.script = [503, 502, 200]
    waits: list[float] = []
    res = post_signed(receiver, _p(), SECRET, timeout=5, retries=3, backoff=0.5, sleep=waits.append)
    assert res.status == 200 and [a.status for a in res.attempts] == [503, 502, 200]
    assert waits == [0.5, 1.0]
    assert all(s["valid"] and s["key"] == "m:3:r:1:shift" for s in _Receiver.seen)


def test_a_4xx_fails_at_once_and_exhausted_retries_fail_with_every_attempt(receiver):
    _Receiver.script = [401]
    with pytest.raises(WebhookError, match="HTTP 401") as e:
        post_signed(receiver, _p(), SECRET, timeout=5, retries=3, backoff=0, sleep=lambda s: None)
    assert len(e.value.attempts) == 1
    _Receiver.script = [500, 500, 500]
    with pytest.raises(WebhookError, match="3 attempt") as e:
        post_signed(receiver, _p(), SECRET, timeout=5, retries=2, backoff=0, sleep=lambda s: None)
    assert [a.status for a in e.value.attempts] == [500, 500, 500]


def _exposition(version: str, ok: int, errors: int, latencies: list[float], preds: list[float]) -> str:
    """Prometheus text as the gateway's client library writes it (real prometheus_client)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    r = CollectorRegistry()
    req = Counter("evergreen_gateway_requests", "", ["role", "version", "outcome"], registry=r)
    lat = Histogram(
        "evergreen_gateway_latency_seconds", "", ["role", "version"], registry=r, buckets=(0.01, 0.02, 0.05, 0.1)
    )
    pred = Histogram(
        "evergreen_gateway_prediction",
        "",
        ["role", "version"],
        registry=r,
        buckets=tuple(np.round(np.arange(0.1, 1.01, 0.1), 1)),
    )
    req.labels("canary", version, "ok").inc(ok)
    if errors:
        req.labels("canary", version, "error").inc(errors)
    for x in latencies:
        lat.labels("canary", version).observe(x)
    for x in preds:
        pred.labels("canary", version).observe(x)
    return generate_latest(r).decode()


def test_metrics_parse_difference_and_quantile_like_prometheus():
    before = parse_metrics(_exposition("7", 10, 0, [0.005] * 10, [0.3] * 10))
    after = parse_metrics(_exposition("7", 110, 5, [0.005] * 10 + [0.015] * 90 + [0.07] * 10, [0.3] * 110))
    s = stats_for(delta(after, before), "7")
    assert (s.requests, s.errors) == (105, 5) and s.error_rate == pytest.approx(5 / 105)
    # 100 new observations: 90 in (0.01, 0.02], 10 in (0.05, 0.1]; p95 interpolates inside the last.
    assert quantile(s.latency_buckets, 0.95) == pytest.approx(0.05 + 0.05 * 0.5)
    assert quantile(s.latency_buckets, 0.5) == pytest.approx(0.01 + 0.01 * 50 / 90)
    assert stats_for(after, "other").requests == 0


def _buckets(values: np.ndarray) -> list[tuple[float, float]]:
    edges = [*np.round(np.arange(0.05, 1.0001, 0.05), 2), float("inf")]
    return [(e, float((values <= e).sum())) for e in edges]


def test_prediction_psi_separates_a_real_shift_from_sampling_noise():
    rng = np.random.default_rng(0)
    champion = _buckets(rng.beta(2, 5, 2000))
    same = [histogram_psi(_buckets(rng.beta(2, 5, 40)), champion) for _ in range(50)]
    corrected = [max(raw - noise, 0) for raw, noise in same]
    assert np.mean([raw for raw, _ in same]) > 0.2  # raw PSI on 40 samples looks like drift...
    assert np.percentile(corrected, 95) < 0.25  # ...most of which is noise
    collapsed = histogram_psi(_buckets(np.full(40, 0.97)), champion)
    assert collapsed[0] - collapsed[1] > 2.0


def _stats(version: str, n: int, errors: int, p95: float, preds: np.ndarray, losses: np.ndarray):
    lat = np.full(n, p95 * 0.9)
    text = _exposition(version, n - errors, errors, list(lat), list(preds))
    s = stats_for(parse_metrics(text), version)
    s.labelled, s.log_loss_sum, s.log_loss_sq_sum = len(losses), losses.sum(), (losses**2).sum()
    return s


def test_analysis_passes_a_healthy_canary_and_names_each_failure():
    cfg = CanaryAnalysisConfig(min_requests=50, min_labelled=50, max_error_rate=0.01, max_prediction_psi=1.0)
    rng = np.random.default_rng(1)
    losses = rng.exponential(0.5, 400)
    champion = _stats("1", 400, 0, 0.02, rng.beta(2, 5, 400), losses)
    healthy = _stats("2", 100, 0, 0.02, rng.beta(2, 5, 100), rng.exponential(0.5, 100))
    v = analyse(healthy, champion, cfg)
    assert v.passed and not v.inconclusive, v.reasons

    broken = _stats("3", 100, 5, 0.09, np.full(100, 0.97), rng.exponential(2.0, 100))
    v = analyse(broken, champion, cfg)
    assert not v.passed
    assert {c.name for c in v.checks if not c.passed} == {
        "error_rate",
        "latency_p95",
        "prediction_shift",
        "realised_log_loss",
    }
    assert all(
        r.split(":")[0] in {"error_rate", "latency_p95", "prediction_shift", "realised_log_loss"} for r in v.reasons
    )


def test_too_little_canary_traffic_is_inconclusive_and_follows_the_config():
    rng = np.random.default_rng(2)
    champion = _stats("1", 400, 0, 0.02, rng.beta(2, 5, 400), rng.exponential(0.5, 400))
    few = _stats("2", 10, 0, 0.02, rng.beta(2, 5, 10), rng.exponential(0.5, 10))
    assert analyse(few, champion, CanaryAnalysisConfig(min_requests=50)).inconclusive
    assert not analyse(few, champion, CanaryAnalysisConfig(min_requests=50)).passed
    assert analyse(few, champion, CanaryAnalysisConfig(min_requests=50, on_inconclusive="proceed")).passed


def test_distribution_checks_need_concurrent_champion_traffic():
    rng = np.random.default_rng(3)
    champion = _stats("1", 400, 0, 0.02, rng.beta(2, 5, 400), rng.exponential(0.5, 400))
    shifted = _stats("2", 100, 0, 0.02, rng.beta(5, 2, 100), rng.exponential(0.5, 100))
    assert not analyse(shifted, champion, CanaryAnalysisConfig(min_requests=50)).passed
    later = analyse(
        shifted, champion, CanaryAnalysisConfig(min_requests=50), baseline="champion over the whole rollout"
    )
    assert later.passed and "skipped" in [c for c in later.checks if c.name == "prediction_shift"][0].note


def test_rollout_steps_must_rise_to_100():
    assert RolloutConfig(steps=[5, 50, 100]).steps == [5, 50, 100]
    for bad in ([10, 50], [50, 10, 100], [0, 100], [10, 100, 100]):
        with pytest.raises(ValueError, match="steps"):
            RolloutConfig(steps=bad)
    assert RolloutConfig(webhook_url="https://gw.example:8443/hooks/rollout").resolved_metrics_url == (
        "https://gw.example:8443/metrics"
    )


def test_a_few_timed_calls_are_judged_by_their_median_not_by_the_slowest():
    # A canary whose rows came in 9 calls: their p95 is the slowest call, and one pause of the host
    # would roll a healthy canary back. The median under the same rule still catches a slow canary.
    cfg = CanaryAnalysisConfig(min_requests=50, min_labelled=50, max_error_rate=0.01, max_prediction_psi=1.0)
    rng = np.random.default_rng(3)
    champion = _stats("1", 400, 0, 0.02, rng.beta(2, 5, 400), rng.exponential(0.5, 400))

    def canary(latencies: list[float]):
        s = _stats("2", 100, 0, 0.02, rng.beta(2, 5, 100), rng.exponential(0.5, 100))
        s.latency_buckets = stats_for(parse_metrics(_exposition("2", 9, 0, latencies, [])), "2").latency_buckets
        return s

    one_pause = canary([0.015] * 8 + [0.09])
    assert one_pause.latency_samples == 9 and one_pause.latency_p95_ms > 50
    v = analyse(one_pause, champion, cfg)
    assert v.passed, v.reasons
    assert [c.name for c in v.checks if c.name.startswith("latency")] == ["latency_p50"]

    slow = analyse(canary([0.09] * 9), champion, cfg)
    assert not slow.passed and [r.split(":")[0] for r in slow.reasons] == ["latency_p50"]

    slow_many = _stats("2", 100, 0, 0.09, rng.beta(2, 5, 100), rng.exponential(0.5, 100))
    many = analyse(slow_many, champion, cfg)
    assert [r.split(":")[0] for r in many.reasons] == ["latency_p95"]  # 100 timed calls: the p95 is judged
