"""Rollout stages: resolve the version, move ``canary``, post each signed step, bake and analyse,
then promote or roll back. Alias moves go through the registry's audited, all-or-nothing helper."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mlflow.exceptions import MlflowException
from prefect import task
from prefect.blocks.system import Secret
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_UI_URL

from evergreen import registry
from evergreen.canary import CanaryVerdict, Snapshot, analyse, delta, scrape_metrics, stats_for
from evergreen.config import EvergreenConfig
from evergreen.rollout import CANARY, RolloutError, WebhookError, build_payload, post_signed, write_record
from tasks.common import markdown_artifact, table_artifact


@dataclass
class Target:
    version: str
    champion: str | None
    gate: dict[str, Any]
    run_id: str


def secret_for(cfg: EvergreenConfig) -> str:
    """The webhook secret: a Prefect Secret block when configured, else the environment. Never logged."""
    r = cfg.rollout
    if r.secret_block:
        try:
            # Called from sync code: the sync result (Prefect types it as a sync-or-async union).
            value = cast(Secret[str], Secret.load(r.secret_block)).get()
        except (ValueError, RuntimeError) as e:
            raise RolloutError(f"rollout.secret_block: cannot load Prefect Secret block '{r.secret_block}': {e}") from e
        return str(value)
    value = os.environ.get(r.secret_env, "")
    if not value:
        raise RolloutError(
            f"rollout secret missing: set ${r.secret_env} (rollout.secret_env) or name a Prefect Secret "
            "block in rollout.secret_block; the gateway must use the same secret"
        )
    return value


def run_link(flow_run: str | None) -> str | None:
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run}" if ui and flow_run else flow_run


@task(name="resolve-rollout-target", cache_policy=NONE)
def resolve_target(cfg: EvergreenConfig, version: str | None, force: bool) -> Target:
    """The version to roll out (default: ``@challenger``); it must have passed its gate unless forced."""
    c = registry.client(cfg.tracking_uri)
    name = cfg.registry.model_name
    version = version or registry.alias_version(c, name, registry.CHALLENGER)
    if version is None:
        raise RolloutError(f"model '{name}' has no @challenger: pass --version or run the training flow first")
    try:
        mv = c.get_model_version(name, str(version))
    except MlflowException:
        raise RolloutError(f"model '{name}' has no version {version}: see `evergreen history`") from None
    champion = registry.alias_version(c, name, registry.CHAMPION)
    if champion == str(version):
        raise RolloutError(f"v{version} already is the champion of '{name}': nothing to roll out")
    gate = {k.removeprefix("evergreen.gate."): v for k, v in mv.tags.items() if k.startswith("evergreen.gate.")}
    if gate.get("verdict") != "pass" and not force:
        raise RolloutError(
            f"v{version} did not pass its gate ({gate.get('verdict', 'no gate record')}); pass force=True to override"
        )
    return Target(str(version), champion, gate, str(mv.run_id))


@task(name="post-rollout-step", cache_policy=NONE)
def post_step(cfg: EvergreenConfig, payload: dict[str, Any]) -> dict[str, Any]:
    """One signed webhook call; the client retries it (``rollout.retries``, with backoff) and raises
    WebhookError with every attempt, which the record keeps, so the task itself does not retry."""
    r = cfg.rollout
    res = post_signed(
        r.webhook_url,
        payload,
        secret_for(cfg),
        timeout=r.request_timeout_seconds,
        retries=r.retries,
        backoff=r.backoff_seconds,
    )
    return {"status": res.status, "attempts": len(res.attempts), "response": res.body}


def scrape(cfg: EvergreenConfig) -> Snapshot:
    return scrape_metrics(cfg.rollout.resolved_metrics_url, cfg.rollout.request_timeout_seconds)


@task(name="bake-and-analyse", cache_policy=NONE)
def bake_and_analyse(cfg: EvergreenConfig, canary: str, champion: str, since_start: Snapshot) -> CanaryVerdict:
    """Wait out the bake (longer, up to max_bake_seconds, until the canary has min_requests), then
    judge the window's canary traffic against the champion's (or the champion's whole-rollout
    traffic when it had too little in this window, as at 100%)."""
    logger = get_run_logger()
    r = cfg.rollout
    before = scrape(cfg)
    t0 = time.monotonic()
    time.sleep(r.bake_seconds)
    while True:
        after = scrape(cfg)
        window = delta(after, before)
        can = stats_for(window, canary)
        waited = time.monotonic() - t0
        if can.requests >= r.analysis.min_requests or waited >= r.max_bake_seconds:
            break
        logger.info("baking: %d canary requests after %.0f s (want %d)", can.requests, waited, r.analysis.min_requests)
        time.sleep(min(0.5, max(0.1, r.max_bake_seconds - waited)))
    champ = stats_for(window, champion)
    baseline = "same window"
    if champ.requests < r.analysis.min_requests:
        champ, baseline = stats_for(delta(after, since_start), champion), "champion over the whole rollout"
    verdict = analyse(can, champ, r.analysis, baseline)
    logger.info("analysis %s: %s", "pass" if verdict.passed else "FAIL", [c.note for c in verdict.checks])
    return verdict


@task(name="move-aliases", cache_policy=NONE)
def move_aliases(cfg: EvergreenConfig, moves: list[tuple[str, str | None]], why: str, flow_run: str | None) -> None:
    registry.move_aliases(registry.client(cfg.tracking_uri), cfg.registry.model_name, moves, why, flow_run)


def current_aliases(cfg: EvergreenConfig) -> dict[str, str]:
    return registry.aliases(registry.client(cfg.tracking_uri), cfg.registry.model_name)


def payload(
    cfg: EvergreenConfig, target: Target, rollout_id: str, action: str, step: int, weight: float, link: str | None
) -> dict[str, Any]:
    alias = registry.CHAMPION if action == "promote" else CANARY
    return build_payload(
        model=cfg.registry.model_name,
        version=target.version,
        previous_version=target.champion,
        alias=alias,
        action=action,
        step=step,
        steps=len(cfg.rollout.steps),
        weight=weight,
        gate=target.gate,
        run_link=link,
        rollout_id=rollout_id,
    )


@task(name="record-rollout", cache_policy=NONE)
def record(cfg: EvergreenConfig, rec: dict[str, Any]) -> Path:
    """One decision record: JSON file and picture, MLflow tags on the version, Prefect artifacts."""
    path = write_record(cfg.tracking_uri, cfg.registry.model_name, cfg.reports_dir / "rollout", rec)
    name, version = cfg.registry.model_name, rec["version"]
    lines = [
        f"# Rollout of {name} v{version}: **{rec['status'].upper()}**",
        "",
        f"Champion before: v{rec['champion_before']}; after: v{rec['aliases_after'].get(registry.CHAMPION)}.",
        "",
        *[f"- {r}" for r in rec["reasons"]],
        "",
        f"Decision record: `{path}`" + (f", picture: `{path.with_suffix('.png')}`" if rec["steps"] else ""),
    ]
    markdown_artifact("\n".join(lines), "rollout-decision", f"Rollout {rec['status']}")
    rows = [
        {
            "step": s["step"],
            "weight": s["weight"],
            "webhook": s.get("webhook", {}).get("status") or s.get("error", ""),
            "attempts": s.get("webhook", {}).get("attempts") or s.get("attempts"),
            "analysis": None if "analysis" not in s else ("pass" if s["analysis"]["passed"] else "FAIL"),
            "canary_requests": (s.get("analysis") or {}).get("canary", {}).get("requests"),
            "canary_error_rate": (s.get("analysis") or {}).get("canary", {}).get("error_rate"),
            "canary_p95_ms": (s.get("analysis") or {}).get("canary", {}).get("latency_p95_ms"),
        }
        for s in rec["steps"]
    ]
    if rows:
        table_artifact(rows, "rollout-steps", "Canary steps: webhook result and analysis")
    return path


def webhook_failure(e: WebhookError) -> dict[str, Any]:
    return {
        "error": str(e),
        "attempts": len(e.attempts),
        "attempt_log": [{"n": a.number, "status": a.status, "error": a.error} for a in e.attempts],
    }
