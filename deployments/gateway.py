"""Reference serving gateway: ``@champion`` and ``@canary`` from MLflow, features from the Feast online
store, a stable traffic split driven by the signed rollout webhook, Prometheus metrics.

    EVERGREEN_ROLLOUT_SECRET=... python -m deployments.gateway --config configs/default.yaml --port 8800

Endpoints: ``POST /predict`` (``{"rows": [...]}``, each row in the problem's ``request`` schema),
``POST /feedback`` (labels after the fact, for realised quality), ``POST /rollout`` (the webhook),
``GET /health``, ``GET /metrics``.

The registry is the source of truth for *which* versions serve: the gateway re-reads the aliases
every ``serving.reload_seconds`` and whenever a webhook arrives. The webhook sets *how much* traffic
the canary gets; the gateway that receives it records the weight on the canary's model version
(tag ``evergreen.canary_weight``), and every replica reads it there with the aliases: replicas behind
a load balancer agree within one reload, and a restart keeps the weight. No ``@canary`` alias means
weight 0, so a rollback that could not reach the gateway still takes effect on its next alias read.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from deployments.serving import (
    SPLIT_BUCKETS,
    TIMESTAMP_SUFFIX,
    Loaded,
    Metrics,
    model_input,
    request_models,
    split_bucket,
)
from evergreen import registry
from evergreen.config import EvergreenConfig, load_config
from evergreen.problem import load_problem
from evergreen.rollout import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

if TYPE_CHECKING:  # annotations only: MLflow and Feast are imported where used (their imports take seconds)
    from feast import FeatureService, FeatureStore, FeatureView
    from mlflow import MlflowClient

log = logging.getLogger("evergreen.gateway")
CANARY = "canary"
ROLES = (registry.CHAMPION, CANARY)
REMEMBERED_PREDICTIONS = 200_000


def _in_time(stamp: float, at: float, ttl: float) -> bool:
    """A value stamped ``stamp`` (0: no row) is usable at ``at``: known by then and not past its TTL (0: none)."""
    return bool(stamp) and stamp <= at and (ttl == 0 or stamp >= at - ttl)


def _ttl_seconds(view: FeatureView) -> float:
    """The view's TTL in seconds, 0 = never expires (Feast treats an unset TTL the same way)."""
    return view.ttl.total_seconds() if view.ttl is not None else 0.0


class Gateway:
    def __init__(self, cfg: EvergreenConfig, secret: str | None) -> None:
        self.cfg = cfg
        self.secret = secret
        self.name = cfg.registry.model_name
        self.metrics = Metrics()
        self.lock = threading.RLock()
        self.feast_lock = threading.Lock()
        self.reload_lock = threading.Lock()
        self.models: dict[str, Loaded | None] = {role: None for role in ROLES}
        self.weight = 0.0
        self.last_reload: float | None = None
        self.reload_error: str | None = None
        self.seen_signatures: dict[str, float] = {}
        self.applied: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.served: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._stop = threading.Event()
        self._store: FeatureStore | None = None
        self._snapshot = ""  # the Feast snapshot the store reads
        self._snapshot_checked = -float("inf")  # when the published snapshot was last read (monotonic)
        self._views: dict[str, tuple[str, list[str]]] = {}
        self._service: FeatureService | None = None
        self._ttl: dict[str, float] = {}
        self._keys: list[str] = []
        self._client: MlflowClient = registry.client(cfg.tracking_uri)
        self.problem = load_problem(cfg)
        self.requests = request_models(cfg.problem)
        self.entity_id, self.label = cfg.problem.entity_id, cfg.problem.label

    # ── models ──────────────────────────────────────────────────────────────────────────────────
    def _load(self, role: str, version: str) -> Loaded:
        import mlflow
        from mlflow.pyfunc import load_model  # `mlflow.pyfunc` is a lazy module: untyped through `mlflow.`

        mlflow.set_tracking_uri(self.cfg.tracking_uri)  # models:/ URIs resolve against the global registry
        mlflow.set_registry_uri(self.cfg.tracking_uri)
        for existing in self.models.values():
            if existing is not None and existing.version == version:
                return existing
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(f"models:/{self.name}/{version}")
        seconds = time.perf_counter() - t0
        self.metrics.load_seconds.labels(role, version).set(seconds)
        log.warning("loaded %s v%s as %s in %.2f s", self.name, version, role, seconds)
        return Loaded(version, model, seconds, time.time())

    def reload(self) -> dict[str, str | None]:
        """Make the loaded models match the registry aliases (loads happen outside the serving lock)."""
        with self.reload_lock:
            try:
                wanted = {role: registry.alias_version(self._client, self.name, role) for role in ROLES}
                weight = registry.canary_weight(self._client, self.name, wanted[CANARY])
                loaded = {
                    role: (
                        None
                        if v is None
                        else (self.models[role] if (m := self.models[role]) and m.version == v else self._load(role, v))
                    )
                    for role, v in wanted.items()
                }
            except Exception as e:  # a registry outage must not take serving down: keep what is loaded
                self.reload_error = f"{type(e).__name__}: {e}"
                self.metrics.reloads.labels("error").inc()
                log.warning("alias reload failed: %s", self.reload_error)
                raise
            with self.lock:
                self.models = loaded
                self.weight = weight
                self.metrics.weight.set(weight)
                self.last_reload, self.reload_error = time.time(), None
            self.metrics.reloads.labels("ok").inc()
            return wanted

    def poll(self) -> None:
        while not self._stop.wait(self.cfg.serving.reload_seconds):
            try:
                self.reload()
            except Exception:  # noqa: S112 - recorded in reload_error and the reloads counter
                continue

    def _set_weight(self, weight: float, version: str) -> None:
        """Record the weight where every replica reads it, then apply it here at once."""
        registry.set_canary_weight(self._client, self.name, version, weight)
        self.weight = weight
        self.metrics.weight.set(weight)

    # ── features and prediction ─────────────────────────────────────────────────────────────────
    def published(self) -> str:
        """The published Feast snapshot: on the embedded default where the link points (per request,
        one readlink); from shared stores the pointer, read at most once per reload interval."""
        from evergreen.feature_store import published_snapshot

        if self.cfg.feast_is_local and not self.cfg.features.shared_stores:
            return os.path.realpath(self.cfg.feast_dir)
        now = time.monotonic()
        if now - self._snapshot_checked >= self.cfg.serving.reload_seconds:
            self._snapshot_checked = now
            return published_snapshot(self.cfg) or ""
        return self._snapshot

    def open_store(self) -> tuple[FeatureStore, FeatureService]:
        """Build the Feast store before serving (Feast's import and registry read take seconds), and
        again when the features flow has published a new snapshot."""
        from evergreen.feature_store import get_store, join_keys

        snapshot = self.published()
        with self.feast_lock:
            if self._store is None or self._service is None or snapshot != self._snapshot:
                pinned = self.cfg
                if not self.cfg.feast_is_local or self.cfg.features.shared_stores:
                    pinned = self.cfg.model_copy(update={"feast_state": snapshot or None})
                store = get_store(pinned)
                service = store.get_feature_service(self.cfg.features.feature_service)
                self._keys = join_keys(store, self.cfg.features.feature_service)
                # feature -> its view's TTL in seconds (0 = never expires)
                self._ttl = {
                    f.name: _ttl_seconds(store.get_feature_view(proj.name))
                    for proj in service.feature_view_projections
                    for f in proj.features
                }
                # view -> (one of its features, the request's join keys it is read by)
                self._views = {}
                for proj in service.feature_view_projections:
                    view = store.get_feature_view(proj.name)
                    keys = [proj.join_key_map.get(c.name, c.name) for c in view.entity_columns]
                    self._views[proj.name] = (proj.features[0].name, keys)
                self._store, self._service, self._snapshot = store, service, snapshot
            return self._store, self._service

    def _features(self, rows: list[Any]) -> tuple[pd.DataFrame, list[list[str]], list[list[str]]]:
        """The model's input rows; per row the join keys the online store has never seen and the
        views whose values had expired by TTL (the model then sees them missing)."""
        store, service = self.open_store()
        req = pd.DataFrame([r.model_dump(exclude={"prediction_time"}) for r in rows])
        entities = self.problem.entity_rows(req)[self._keys]
        keys = [dict(zip(self._keys, values, strict=True)) for values in entities.itertuples(index=False)]
        with self.feast_lock:
            resp = store.get_online_features(features=service, entity_rows=keys)
        data = resp.to_dict(include_event_timestamps=True)
        now = time.time()
        at = [r.prediction_time.timestamp() if r.prediction_time else now for r in rows]
        # The online store keeps the latest value per entity however old: apply the views' TTLs here,
        # or serving would see stale values where training saw missing ones (training/serving skew).
        # Plain lists: a handful of rows, where per-column pandas calls would cost milliseconds.
        stamps = {name: data.pop(name + TIMESTAMP_SUFFIX) for name in self._ttl}
        for name, ttl in self._ttl.items():
            data[name] = [
                v if _in_time(s, t, ttl) else None for v, s, t in zip(data[name], stamps[name], at, strict=True)
            ]
        unknown: list[list[str]] = [[] for _ in rows]
        stale: list[list[str]] = [[] for _ in rows]
        for view, (feature, view_keys) in self._views.items():
            ttl = self._ttl[feature]
            for i, (s, t) in enumerate(zip(stamps[feature], at, strict=True)):
                if not s:  # Feast's timestamp for an entity without a row: 0
                    unknown[i] += [k for k in view_keys if k not in unknown[i]]
                elif not _in_time(s, t, ttl):
                    stale[i].append(view)
        feats = pd.DataFrame(data)
        feats = feats.drop(columns=[c for c in feats.columns if c in req.columns])
        return pd.concat([req.reset_index(drop=True), feats.reset_index(drop=True)], axis=1), unknown, stale

    def route(self, ids: list[str]) -> list[str]:
        with self.lock:
            weight, has_canary = self.weight, self.models[CANARY] is not None
        cut = weight / 100.0 * SPLIT_BUCKETS
        return [CANARY if has_canary and split_bucket(i) < cut else registry.CHAMPION for i in ids]

    def predict(self, req: Any) -> dict[str, Any]:
        """``req``: a ``self.requests.predict`` body."""
        t0 = time.perf_counter()
        with self.lock:
            models = dict(self.models)
        champion = models[registry.CHAMPION]
        if champion is None:
            raise HTTPException(503, f"model '{self.name}' has no @champion yet: run the training flow first")
        if len(req.rows) > self.cfg.serving.max_batch:
            raise HTTPException(
                413, f"{len(req.rows)} rows in one call; serving.max_batch is {self.cfg.serving.max_batch}"
            )
        ids = [str(getattr(r, self.entity_id)) for r in req.rows]
        roles = self.route(ids)
        frame, unknown, stale = self._features(req.rows)
        probs = [math.nan] * len(roles)
        served = list(roles)
        fallback = [False] * len(roles)
        for role in (CANARY, registry.CHAMPION):
            idx = [i for i, r in enumerate(served) if r == role]
            m = models[role]
            if not idx or m is None:
                continue
            try:
                out = m.model.predict(model_input(frame.iloc[idx].reset_index(drop=True), m.model))
            except Exception as e:
                self.metrics.requests.labels(role, m.version, "error").inc(len(idx))
                if role == registry.CHAMPION:
                    raise HTTPException(500, f"champion v{m.version} failed to predict: {type(e).__name__}: {e}") from e
                log.warning("canary v%s failed on %d rows, served by champion: %s", m.version, len(idx), e)
                for i in idx:  # the caller still gets an answer: the champion serves these rows
                    served[i], fallback[i] = registry.CHAMPION, True
                continue
            for i, p in zip(idx, out, strict=True):
                probs[i] = float(p)
        for keys in unknown:
            for k in keys:
                self.metrics.unknown_entities.labels(k).inc()
        for views in stale:
            for v in views:
                self.metrics.stale_views.labels(v).inc()
        elapsed = time.perf_counter() - t0
        versions: dict[str, str] = {}  # role -> the version that served its rows
        for role in set(served):
            m = models[role]
            assert m is not None
            versions[role] = m.version
            mine = [probs[i] for i, r in enumerate(served) if r == role]
            self.metrics.latency.labels(role, m.version).observe(elapsed)
            self.metrics.requests.labels(role, m.version, "ok").inc(len(mine))
            for p in mine:
                self.metrics.prediction.labels(role, m.version).observe(p)
        results: list[dict[str, Any]] = []
        with self.lock:
            for i, (key, role, p) in enumerate(zip(ids, served, probs, strict=True)):
                version = versions[role]
                self.served[key] = (version, p)
                row = {self.entity_id: key, "probability": p, "version": version, "role": role}
                row |= {"unknown_entities": unknown[i], "stale_views": stale[i]}
                results.append(row | ({"fallback": True} if fallback[i] else {}))
            while len(self.served) > REMEMBERED_PREDICTIONS:
                self.served.popitem(last=False)
        body: dict[str, Any] = {"model": self.name, "predictions": results}
        if req.return_features:
            body["features"] = json.loads(frame.to_json(orient="records"))
        return body

    def feedback(self, req: Any) -> dict[str, Any]:
        """``req``: a ``self.requests.feedback`` body: outcomes by entity id."""
        matched, unknown = 0, []
        outcomes = [(getattr(o, self.entity_id), bool(getattr(o, self.label))) for o in req.outcomes]
        with self.lock:
            seen = [(key, positive, self.served.get(key)) for key, positive in outcomes]
        for key, positive, hit in seen:
            if hit is None:
                unknown.append(key)
                continue
            version, p = hit
            p = min(max(p, 1e-6), 1 - 1e-6)
            loss = -math.log(p) if positive else -math.log(1 - p)
            self.metrics.feedback.labels(version).inc()
            self.metrics.feedback_log_loss.labels(version).inc(loss)
            self.metrics.feedback_log_loss_sq.labels(version).inc(loss * loss)
            matched += 1
        return {"matched": matched, "unknown": unknown[:100], "unknown_count": len(unknown)}

    # ── rollout webhook ─────────────────────────────────────────────────────────────────────────
    def _reject(self, status: int, result: str, detail: str) -> JSONResponse:
        self.metrics.webhooks.labels(result).inc()
        log.warning("rollout webhook rejected (%s): %s", result, detail)
        return JSONResponse({"detail": detail}, status_code=status)

    def rollout(self, body: bytes, headers: dict[str, str]) -> JSONResponse:
        if not self.secret:
            return self._reject(
                503, "no_secret", f"gateway started without ${self.cfg.rollout.secret_env}: webhooks disabled"
            )
        now = time.time()
        tolerance = self.cfg.serving.signature_tolerance_seconds
        signature = headers.get(SIGNATURE_HEADER.lower(), "")
        problem = verify(self.secret, headers.get(TIMESTAMP_HEADER.lower(), ""), body, signature, now, tolerance)
        if problem:
            return self._reject(401, "unauthorized", problem)
        with self.lock:
            self.seen_signatures = {s: t for s, t in self.seen_signatures.items() if t > now - 2 * tolerance}
            if signature in self.seen_signatures:
                return self._reject(409, "replayed", "this signed request was already received (replay)")
            self.seen_signatures[signature] = now
        try:
            p = json.loads(body)
            action, version, key = str(p["action"]), str(p["version"]), str(p["idempotency_key"])
            weight = float(p["weight"])
        except (ValueError, KeyError, TypeError) as e:
            return self._reject(400, "bad_payload", f"payload lacks or mangles a field: {e}")
        if p.get("model") != self.name:
            return self._reject(409, "wrong_model", f"this gateway serves '{self.name}', not '{p.get('model')}'")
        if headers.get(IDEMPOTENCY_HEADER.lower(), key) != key:
            return self._reject(400, "bad_payload", "Idempotency-Key header and payload disagree")
        with self.lock:
            if key in self.applied:
                self.metrics.webhooks.labels("duplicate").inc()
                return JSONResponse({**self.applied[key], "duplicate": True})
        if action not in ("shift", "promote", "rollback") or not 0 <= weight <= 100:
            return self._reject(400, "bad_payload", f"action {action!r} / weight {weight} not understood")
        try:
            wanted = self.reload()
        except Exception as e:
            return self._reject(503, "registry_unavailable", f"cannot read registry aliases: {e}")
        if action == "shift" and wanted[CANARY] != version:
            return self._reject(409, "alias_mismatch", f"registry @canary is {wanted[CANARY]}, payload says {version}")
        if action == "promote" and wanted[registry.CHAMPION] != version:
            return self._reject(
                409, "alias_mismatch", f"registry @champion is {wanted[registry.CHAMPION]}, payload says {version}"
            )
        try:
            with self.lock:
                self._set_weight(weight if action == "shift" else 0.0, version)
        except Exception as e:
            return self._reject(503, "registry_unavailable", f"cannot record the weight in the registry: {e}")
        with self.lock:
            result = {
                "applied": True,
                "action": action,
                "weight": self.weight,
                "champion": wanted[registry.CHAMPION],
                "canary": wanted[CANARY],
            }
            self.applied[key] = result
            while len(self.applied) > 1000:
                self.applied.popitem(last=False)
        self.metrics.webhooks.labels("applied").inc()
        log.warning("rollout %s: v%s weight %.1f%%", action, version, self.weight)
        return JSONResponse(result)

    def health(self) -> dict[str, Any]:
        with self.lock:
            models = {
                role: (None if m is None else {"version": m.version, "load_seconds": round(m.load_seconds, 3)})
                for role, m in self.models.items()
            }
            return {
                "status": "ok" if self.models[registry.CHAMPION] is not None else "no-champion",
                "model": self.name,
                "models": models,
                "canary_weight": self.weight,
                "last_reload": self.last_reload,
                "reload_error": self.reload_error,
                "webhooks": "enabled" if self.secret else "disabled (no secret)",
            }


def create_app(cfg: EvergreenConfig, secret: str | None) -> FastAPI:
    gw = Gateway(cfg, secret)
    try:
        gw.reload()
    except Exception as e:  # the poller keeps trying; /health says what is wrong
        log.warning("initial alias read failed: %s", e)
    gw.open_store()
    threading.Thread(target=gw.poll, name="alias-poller", daemon=True).start()
    app = FastAPI(title="Evergreen serving gateway", version="1")
    app.state.gateway = gw

    # The bodies' models come from the problem's request schema: given to FastAPI as real classes.
    def predict(req: Any) -> dict[str, Any]:
        return gw.predict(req)

    def feedback(req: Any) -> dict[str, Any]:
        return gw.feedback(req)

    predict.__annotations__["req"] = gw.requests.predict
    feedback.__annotations__["req"] = gw.requests.feedback
    app.post("/predict")(predict)
    app.post("/feedback")(feedback)

    @app.post("/rollout")
    async def rollout(request: Request) -> JSONResponse:
        body = await request.body()  # the exact bytes that were signed
        headers = {k.lower(): v for k, v in request.headers.items()}
        return await run_in_threadpool(gw.rollout, body, headers)  # it may load a model: off the event loop

    @app.get("/health")
    def health() -> JSONResponse:
        h = gw.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deployments.gateway", description=__doc__.split("\n\n")[0])
    default = os.environ.get("EVERGREEN_CONFIG") or str(
        Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
    )
    p.add_argument("--config", default=default)
    p.add_argument("--host", default=None, help="default: serving.host")
    p.add_argument("--port", type=int, default=None, help="default: serving.port")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*type hint.*")  # MLflow's note about PythonModel.predict
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load_config(args.config)
    secret = os.environ.get(cfg.rollout.secret_env) or None
    if secret is None:
        log.warning("$%s is not set: /rollout answers 503 until the gateway restarts with it", cfg.rollout.secret_env)
    import uvicorn

    app = create_app(cfg, secret)
    uvicorn.run(app, host=args.host or cfg.serving.host, port=args.port or cfg.serving.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
