"""The gateway's parts that need no web server: request schemas, the stable traffic split, the
model-input casting and the Prometheus metrics. ``deployments/gateway.py`` wires them into FastAPI."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from pydantic import BaseModel, ConfigDict, Field, field_validator

SPLIT_BUCKETS = 10_000
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
PREDICTION_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
TIMESTAMP_SUFFIX = "__ts"  # Feast's suffix for a feature's event timestamp (epoch seconds)


class Flight(BaseModel):
    """One prediction request: the flight's keys and its request-time fields."""

    model_config = ConfigDict(extra="forbid")
    flight_id: str = Field(min_length=1)
    tailnum: str = Field(min_length=1)
    carrier: str = Field(min_length=1)
    origin: str = Field(min_length=1)
    dest: str = Field(min_length=1)
    distance: float = Field(ge=0)
    dep_hour: int = Field(ge=0, le=23)
    day_of_week: int = Field(ge=0, le=6, description="0 = Monday, local time of departure")
    # When the prediction is made (default: now). Features older than their view's TTL, or newer
    # than this instant, are served as missing, exactly as the offline point-in-time join does.
    prediction_time: datetime | None = None

    @field_validator("prediction_time")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v  # naive = UTC


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flights: list[Flight] = Field(min_length=1)
    return_features: bool = False


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flight_id: str
    delayed: bool


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcomes: list[Outcome] = Field(min_length=1)


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
    """Stable bucket in [0, 10000) per request key: the same flight always meets the same model."""
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
            "Predicted delay probability",
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
