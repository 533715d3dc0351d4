"""Canary webhook client: signed JSON payloads, bounded retries with backoff (tenacity), clear failures.

The signature is HMAC-SHA256 over ``"<timestamp>." + body`` (the timestamp travels in its own
header), so a receiver can reject both tampered bodies and replays outside its time window. The
secret only ever lives in memory: it is not part of the payload, the logs or any record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from evergreen import registry
from evergreen.plots import plot_rollout

CANARY = "canary"  # the alias a rollout moves step by step
ROLLOUT_ALIASES = (CANARY, registry.CHAMPION, registry.PREVIOUS)

TIMESTAMP_HEADER = "X-Evergreen-Timestamp"
SIGNATURE_HEADER = "X-Evergreen-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_PREFIX = "sha256="


class RolloutError(ValueError):
    """A rollout that cannot start (unknown version, gate not passed, no secret): nothing was changed."""


class RolledBack(RuntimeError):
    """A rollout step failed and was rolled back; the decision record says why."""


class WebhookError(RuntimeError):
    """A step the receiver did not accept (non-2xx) or never answered after all retries."""

    def __init__(self, message: str, attempts: list[Attempt]) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass
class Attempt:
    number: int
    status: int | None
    error: str | None
    seconds: float


@dataclass
class WebhookResult:
    status: int
    body: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float, tolerance: float) -> str | None:
    """None when the signature is valid and fresh, else the reason it is not (for a 401 body)."""
    try:
        ts = float(timestamp)
    except (TypeError, ValueError):
        return f"missing or malformed {TIMESTAMP_HEADER} header"
    if abs(now - ts) > tolerance:
        return f"timestamp outside the {tolerance:.0f} s window (replayed or clock skew)"
    if not signature or not hmac.compare_digest(sign(secret, timestamp, body), signature):
        return "signature does not match the body"
    return None


def encode(payload: dict[str, Any]) -> bytes:
    """Canonical JSON: the exact bytes that are signed are the bytes that are sent."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def idempotency_key(model: str, version: str, rollout_id: str, step: int, action: str) -> str:
    return f"{model}:{version}:{rollout_id}:{step}:{action}"


def build_payload(
    *,
    model: str,
    version: str,
    previous_version: str | None,
    alias: str,
    action: str,
    step: int,
    steps: int,
    weight: float,
    gate: dict[str, Any],
    run_link: str | None,
    rollout_id: str,
) -> dict[str, Any]:
    return {
        "model": model,
        "version": version,
        "previous_version": previous_version,
        "alias": alias,
        "action": action,
        "step": step,
        "steps": steps,
        "weight": weight,
        "gate": gate,
        "run_link": run_link,
        "rollout_id": rollout_id,
        "idempotency_key": idempotency_key(model, version, rollout_id, step, action),
    }


def _worth_retrying(error: BaseException) -> bool:
    """Transport errors and 5xx, 408 and 429 may pass on a later try; other 4xx cannot."""
    if isinstance(error, httpx.HTTPStatusError):
        code = error.response.status_code
        return not (400 <= code < 500 and code not in (408, 429))
    return isinstance(error, httpx.HTTPError)


def post_signed(
    url: str,
    payload: dict[str, Any],
    secret: str,
    *,
    timeout: float,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> WebhookResult:
    """POST ``payload`` signed; 2xx returns, a 4xx other than 408/429 fails at once (retrying cannot
    help), anything else is retried ``retries`` times with exponential backoff, then fails.
    Each attempt is signed afresh (new timestamp) under the same idempotency key."""
    body = encode(payload)
    attempts: list[Attempt] = []

    def attempt(client: httpx.Client) -> httpx.Response:
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(secret, ts, body),
            IDEMPOTENCY_HEADER: str(payload.get("idempotency_key", "")),
        }
        t0 = time.perf_counter()
        try:
            r = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            attempts.append(Attempt(len(attempts) + 1, None, f"{type(e).__name__}: {e}", time.perf_counter() - t0))
            raise
        error = None if r.is_success else r.text[:500]
        attempts.append(Attempt(len(attempts) + 1, r.status_code, error, time.perf_counter() - t0))
        return r.raise_for_status()

    retrying = Retrying(
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential(multiplier=backoff),  # backoff, 2 x backoff, 4 x backoff, ...
        retry=retry_if_exception(_worth_retrying),
        sleep=sleep,
        reraise=True,
    )
    with httpx.Client(timeout=timeout) as client:
        try:
            r = retrying(attempt, client)
        except httpx.HTTPError:
            last = attempts[-1]
            what = f"HTTP {last.status}: {last.error}" if last.status else last.error
            raise WebhookError(
                f"webhook {url} refused step {payload.get('step')} after {len(attempts)} attempt(s): {what}", attempts
            ) from None
    try:
        data = r.json()
    except ValueError:
        data = {"text": r.text[:500]}
    return WebhookResult(r.status_code, data if isinstance(data, dict) else {"body": data}, attempts)


def restore_moves(snapshot: dict[str, str], current: dict[str, str]) -> list[tuple[str, str | None]]:
    """The alias moves that put ``current`` back to ``snapshot`` (only the rollout's aliases)."""
    return [(alias, snapshot.get(alias)) for alias in ROLLOUT_ALIASES if current.get(alias) != snapshot.get(alias)]


def write_record(tracking_uri: str, model_name: str, folder: Path, rec: dict[str, Any]) -> Path:
    """The rollout's one decision record: ``<folder>/<rollout_id>.json``, its picture beside it (PNG,
    when a step ran), both also logged under ``rollout/`` on the version's MLflow run (a run's local
    folder is gone with its container; the run's artifacts are where the team looks), and the
    outcome as tags on the model version (``evergreen.rollout.record``: the logged record's URI)."""
    rec["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    path = folder / f"{rec['rollout_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1, default=str))
    if rec["steps"]:
        plot_rollout(rec).savefig(path.with_suffix(".png"), dpi=100)
    c = registry.client(tracking_uri)
    version = rec["version"]
    run_id = c.get_model_version(model_name, version).run_id
    for written in (path, path.with_suffix(".png")):
        if written.exists():
            c.log_artifact(run_id, str(written), "rollout")
    c.set_model_version_tag(model_name, version, "evergreen.rollout.status", rec["status"])
    c.set_model_version_tag(model_name, version, "evergreen.rollout.summary", "; ".join(rec["reasons"])[:4900])
    c.set_model_version_tag(model_name, version, "evergreen.rollout.record", f"runs:/{run_id}/rollout/{path.name}")
    return path
