"""Rollout flow: a gated version reaches traffic step by step under ``canary`` and comes back by itself.

    python -m flows.rollout --version 3          # on demand (default: the current @challenger)

Runs automatically after a passing gate when ``rollout.enabled`` is true. For each traffic step
(``rollout.steps``) it POSTs a signed webhook, bakes, and analyses the canary against the champion
from the gateway's metrics. Any failed step rolls back: canary weight to 0 and the aliases restored.
After the last step ``champion`` moves to the version and the old champion keeps
``previous_champion``. Every alias move is recorded in the registry's alias log; one decision
record (JSON, MLflow version tags, Prefect artifacts) says what happened and why.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from pydantic import PositiveInt

from evergreen import registry
from evergreen.config import DEFAULT_CONFIG, load_config
from evergreen.rollout import CANARY, RolledBack, WebhookError, restore_moves
from flows.shell import run_flow
from tasks.common import flow_run_id
from tasks.rollout import (
    bake_and_analyse,
    current_aliases,
    move_aliases,
    payload,
    post_step,
    record,
    resolve_target,
    run_link,
    scrape,
    secret_for,
    webhook_failure,
)


@flow(name="rollout", log_prints=True)
def rollout(
    config: str = DEFAULT_CONFIG, version: PositiveInt | None = None, reason: str = "manual", force: bool = False
) -> dict[str, Any]:
    """Canary-roll ``version`` (default ``@challenger``) out through the signed webhook."""
    logger = get_run_logger()
    cfg = load_config(config)
    run = flow_run_id()
    link = run_link(run)
    rollout_id = uuid.uuid4().hex[:12]

    # ── 1. Resolve: version, gate, secret (fail before anything moves) ───────────────────────────
    target = resolve_target(cfg, None if version is None else str(version), force)
    secret_for(cfg)
    before = current_aliases(cfg)
    rec: dict[str, Any] = {
        "rollout_id": rollout_id,
        "model": cfg.registry.model_name,
        "version": target.version,
        "champion_before": target.champion,
        "reason": reason,
        "forced": force,
        "gate": target.gate,
        "flow_run": run,
        "run_link": link,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "aliases_before": before,
        "steps": [],
    }
    why = f"rollout {rollout_id} ({reason})"

    if target.champion is None:  # nothing serves yet: there is no traffic to compare a canary with
        move_aliases(cfg, [(registry.CHAMPION, target.version)], f"{why}: first champion, no canary", run)
        rec |= {"status": "promoted", "reasons": ["no champion yet: promoted without a canary phase"]}
        rec["aliases_after"] = current_aliases(cfg)
        record(cfg, rec)
        return rec

    # ── 2. Canary: alias, then each traffic step (signed webhook, bake, analysis) ────────────────
    move_aliases(cfg, [(CANARY, target.version)], f"{why}: canary start", run)
    failure: str | None = None
    try:  # the champion's traffic from here on is the baseline when a window has too little of it
        start_snapshot = scrape(cfg)
    except Exception:  # the gateway may be down: the first step's webhook will say so, with retries
        start_snapshot = {}
    for i, weight in enumerate(cfg.rollout.steps, start=1):
        step: dict[str, Any] = {"step": i, "weight": weight}
        rec["steps"].append(step)
        logger.info("step %d/%d: canary v%s at %.0f%%", i, len(cfg.rollout.steps), target.version, weight)
        try:
            step["webhook"] = post_step(cfg, payload(cfg, target, rollout_id, "shift", i, weight, link))
        except WebhookError as e:
            step |= webhook_failure(e)
            failure = f"step {i} ({weight:.0f}%): {e}"
            break
        try:
            verdict = bake_and_analyse(cfg, target.version, target.champion, start_snapshot)
        except Exception as e:
            failure = f"step {i} ({weight:.0f}%): canary analysis could not run: {e}"
            break
        step["analysis"] = verdict.to_dict()
        if not verdict.passed:
            failure = f"step {i} ({weight:.0f}%): canary analysis failed: " + "; ".join(verdict.reasons)
            break

    # ── 3a. Roll back: weight 0, aliases restored ────────────────────────────────────────────────
    if failure:
        logger.error("rolling back: %s", failure)
        moves = restore_moves(before, current_aliases(cfg))
        if moves:
            move_aliases(cfg, moves, f"{why}: rolled back: {failure}"[:480], run)
        reasons = [failure]
        try:
            rec["rollback_webhook"] = post_step(cfg, payload(cfg, target, rollout_id, "rollback", 0, 0.0, link))
        except WebhookError as e:
            rec["rollback_webhook"] = webhook_failure(e)
            reasons.append(
                "the rollback webhook did not get through; the gateway drops the canary on its next alias read"
            )
        rec |= {"status": "rolled-back", "reasons": reasons, "aliases_after": current_aliases(cfg)}
        path = record(cfg, rec)
        raise RolledBack(f"rollout of v{target.version} rolled back: {failure} (record: {path})")

    # ── 3b. Promote: champion -> version, previous_champion -> old champion, canary cleared ──────
    moves = [(registry.PREVIOUS, target.champion), (registry.CHAMPION, target.version), (CANARY, None)]
    move_aliases(cfg, moves, f"{why}: all {len(cfg.rollout.steps)} steps passed", run)
    reasons = [f"all {len(cfg.rollout.steps)} canary steps passed: v{target.version} is champion"]
    try:
        rec["promote_webhook"] = post_step(
            cfg, payload(cfg, target, rollout_id, "promote", len(cfg.rollout.steps) + 1, 100.0, link)
        )
    except WebhookError as e:
        rec["promote_webhook"] = webhook_failure(e)
        reasons.append("the promote webhook did not get through; the gateway picks up @champion on its next alias read")
    rec |= {"status": "promoted", "reasons": reasons, "aliases_after": current_aliases(cfg)}
    rec["record"] = str(record(cfg, rec))
    print(f"rollout promoted v{target.version}; previous champion v{target.champion}")
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.rollout", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--version", type=int, default=None, help="registered version to roll out (default: @challenger)")
    p.add_argument("--reason", default="manual", help="why (recorded in the alias log)")
    p.add_argument("--force", action="store_true", help="roll out a version whose gate did not pass")
    args = p.parse_args(argv)
    return run_flow(
        lambda: rollout(config=args.config, version=args.version, reason=args.reason, force=args.force),
        lambda s: json.dumps(s, indent=1, default=str),
    )


if __name__ == "__main__":
    sys.exit(main())
