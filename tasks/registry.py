"""Register-and-promote stage: every challenger becomes a version; the gate decides the champion."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient
from prefect import task
from prefect.cache_policies import NONE

from evergreen import registry, tracking
from evergreen.config import EvergreenConfig
from evergreen.gate import GateDecision
from evergreen.model_card import CARD_ARTIFACT, Lineage, fit_description, render_model_card
from evergreen.tracking import LoggedModel
from evergreen.training import TrainingSet
from tasks.common import talks_to_tracking


@dataclass
class Registered:
    version: str
    champion: str | None
    previous_champion: str | None


@task(name="register-and-promote", cache_policy=NONE, retries=0)
@talks_to_tracking
def register_and_promote(
    cfg: EvergreenConfig,
    data: TrainingSet,
    logged: LoggedModel,
    decision: GateDecision,
    lineage: dict[str, str],
    reason: str,
    flow_run: str | None,
    promote: bool = True,
) -> Registered:
    """Create the version with its gate tags and model card, point ``challenger`` at it and, on pass,
    ``champion`` (unless ``promote`` is false: then a canary rollout decides).

    The version is created and tagged before any alias moves; alias moves are applied as one
    change (restored on failure), so a crash leaves the aliases as they were.
    """
    name, run_id = cfg.registry.model_name, logged.run_id
    c = registry.client(cfg.tracking_uri)
    tags = {
        **lineage,
        "evergreen.gate.verdict": decision.verdict,
        "evergreen.gate.summary": "; ".join(decision.reasons)[:4900],
        "evergreen.gate.champion_version": decision.champion_version or "none",
        "evergreen.gate.roc_auc": f"{decision.challenger['roc_auc']:.5f}",
    }
    if decision.auc_diff:
        tags["evergreen.gate.auc_diff_ci"] = f"[{decision.auc_diff['lower']:+.5f}, {decision.auc_diff['upper']:+.5f}]"
    card = model_card(cfg, c, data, decision, lineage, run_id)
    c.log_text(run_id, card, CARD_ARTIFACT)  # whole, where the description must be cut to fit
    version = registry.register(
        c, name, logged.model_uri, run_id, tags, cfg.problem.description, version_description=fit_description(card)
    )
    why = f"{reason}: gate {decision.verdict} (run {run_id})"
    moves: list[tuple[str, str | None]] = [(registry.CHALLENGER, version)]
    old = registry.alias_version(c, name, registry.CHAMPION)
    if decision.passed and promote:
        if old is not None and old != version:
            moves.append((registry.PREVIOUS, old))
        moves.append((registry.CHAMPION, version))
    registry.move_aliases(c, name, moves, why, flow_run)
    return Registered(version, registry.alias_version(c, name, registry.CHAMPION), old)


def model_card(
    cfg: EvergreenConfig,
    c: MlflowClient,
    data: TrainingSet,
    decision: GateDecision,
    lineage: dict[str, str],
    run_id: str,
) -> str:
    experiment_id = c.get_run(run_id).info.experiment_id
    return render_model_card(
        cfg.registry.model_name,
        cfg.problem,
        data.windows,
        len(data.train),
        len(data.holdout),
        decision,
        data.columns,
        Lineage.from_tags(run_id, lineage, tracking.run_url(tracking.ui_base(cfg), experiment_id, run_id)),
        categorical=data.categorical,
    )
