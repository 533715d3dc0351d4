"""The gateway's parts that need no web server: request schemas, the stable traffic split, the
model-input casting and the Prometheus metrics. ``deployments/gateway.py`` wires them into FastAPI."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from evergreen.config import ProblemConfig

SPLIT_BUCKETS = 10_000
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
PREDICTION_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
TIMESTAMP_SUFFIX = "__ts"  # Feast's suffix for a feature's event timestamp (epoch seconds)


_TYPES: dict[str, type] = {"string": str, "number": float, "integer": int}


def _utc(v: datetime | None) -> datetime | None:
    return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v  # naive = UTC


@dataclass(frozen=True)
class RequestModels:
    """The gateway's request bodies, built from the problem's ``request`` schema."""

    row: type[BaseModel]  # one prediction request: the problem's fields and an optional prediction_time
    predict: type[BaseModel]  # {"rows": [row, ...], "return_features": false}
    outcome: type[BaseModel]  # {<entity id>: "...", <label>: true|false}
    feedback: type[BaseModel]  # {"outcomes": [outcome, ...]}


def request_models(spec: ProblemConfig) -> RequestModels:
    strict = ConfigDict(extra="forbid")
    fields: dict[str, Any] = {}
    for name, f in spec.request.items():
        constraints: dict[str, Any] = {"description": f.description or None}
        if f.type == "string":
            constraints["min_length"] = 1
        else:
            constraints.update(ge=f.ge, le=f.le)
        fields[name] = (_TYPES[f.type], Field(**constraints))
    # When the prediction is made (default: now). Features older than their view's TTL, or newer than
    # this instant, are served as missing, exactly as the offline point-in-time join does.
    fields["prediction_time"] = (datetime | None, None)
    row = create_model(
        "PredictionRow",
        __config__=strict,
        __validators__={"_utc": field_validator("prediction_time")(_utc)},
        **fields,
    )
    predict = create_model(
        "PredictRequest", __config__=strict, rows=(list[row], Field(min_length=1)), return_features=(bool, False)
    )
    outcome = create_model(  # type: ignore[call-overload]
        "Outcome", __config__=strict, **{spec.entity_id: (str, ...), spec.label: (bool, ...)}
    )
    feedback = create_model("FeedbackRequest", __config__=strict, outcomes=(list[outcome], Field(min_length=1)))
    return RequestModels(row, predict, outcome, feedback)


@dataclass
class Loaded:
    version: str
    model: Any
    load_seconds: float
    loaded_at: float


def model_input(frame: pd.DataFrame, model: Any) -> pd.DataFrame:
    """The model's signature columns in its dtypes (ints from JSON become the doubles it was logged with)."""
    schema = model.metadata.get_input_schema()
    if schema is None:
        return frame
    out = {}
    for spec in schema.inputs:
        col: pd.Series = (
            frame[spec.name] if spec.name in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        )
        kind = str(spec.type).lower()
        if "string" in kind:
            # pandas takes None as the replacement (missing strings stay None); its stubs do not allow it
            out[spec.name] = col.astype(object).where(col.notna(), None)  # type: ignore[call-overload]
        else:
            out[spec.name] = pd.to_numeric(col, errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index)


def split_bucket(key: str) -> int:
    """Stable bucket in [0, 10000) per request key: the same request always meets the same model."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % SPLIT_BUCKETS


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream; no *_created series
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "evergreen_gateway_requests", "Predictions served", ["role", "version", "outcome"], registry=r
        )
        self.latency = Histogram(
            "evergreen_gateway_latency_seconds",
            "Wall time of /predict calls, per serving version",
            ["role", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prediction = Histogram(
            "evergreen_gateway_prediction",
            "Predicted probability of the label",
            ["role", "version"],
            buckets=PREDICTION_BUCKETS,
            registry=r,
        )
        self.load_seconds = Gauge(
            "evergreen_gateway_model_load_seconds", "Time to load a model version", ["role", "version"], registry=r
        )
        self.weight = Gauge("evergreen_gateway_canary_weight", "Canary traffic share in percent", registry=r)
        self.feedback = Counter("evergreen_gateway_feedback", "Labelled outcomes matched", ["version"], registry=r)
        self.feedback_log_loss = Counter(
            "evergreen_gateway_feedback_log_loss", "Sum of log loss of labelled outcomes", ["version"], registry=r
        )
        self.feedback_log_loss_sq = Counter(
            "evergreen_gateway_feedback_log_loss_squared",
            "Sum of squared log loss of labelled outcomes (for its variance)",
            ["version"],
            registry=r,
        )
        self.webhooks = Counter("evergreen_gateway_webhooks", "Rollout webhooks by result", ["result"], registry=r)
        self.reloads = Counter("evergreen_gateway_reloads", "Registry alias reads by result", ["result"], registry=r)
        self.unknown_entities = Counter(
            "evergreen_gateway_unknown_entities",
            "Predictions made for an entity the online store has no row for, by join key",
            ["key"],
            registry=r,
        )
        self.stale_views = Counter(
            "evergreen_gateway_stale_views",
            "Predictions made with a view's values expired by its TTL (or not yet known), by view",
            ["view"],
            registry=r,
        )
