"""Canary webhook client: signed JSON payloads, bounded retries with backoff, clear failures.

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
from typing import Any

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
    import httpx

    body = encode(payload)
    attempts: list[Attempt] = []
    with httpx.Client(timeout=timeout) as client:
        for number in range(1, retries + 2):
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
                attempts.append(Attempt(number, None, f"{type(e).__name__}: {e}", time.perf_counter() - t0))
            else:
                attempts.append(Attempt(number, r.status_code, None, time.perf_counter() - t0))
                if r.is_success:
                    try:
                        data = r.json()
                    except ValueError:
                        data = {"text": r.text[:500]}
                    return WebhookResult(r.status_code, data if isinstance(data, dict) else {"body": data}, attempts)
                attempts[-1].error = r.text[:500]
                if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                    break
            if number <= retries:
                sleep(backoff * 2 ** (number - 1))
    last = attempts[-1]
    what = f"HTTP {last.status}: {last.error}" if last.status else last.error
    raise WebhookError(
        f"webhook {url} refused step {payload.get('step')} after {len(attempts)} attempt(s): {what}", attempts
    )
