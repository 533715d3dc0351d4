"""Register-and-promote stage: every challenger becomes a version; the gate decides the champion."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from evergreen import tracking_jobs
from evergreen.config import EvergreenConfig
from evergreen.gate import GateDecision
from evergreen.worker import WorkerProcess


@task(name="register-and-promote", cache_policy=NONE, retries=0)
def register_and_promote(
    cfg: EvergreenConfig,
    tracker: WorkerProcess,
    model_uri: str,
    run_id: str,
    decision: GateDecision,
    lineage: dict[str, str],
    reason: str,
    flow_run: str | None,
    promote: bool = True,
) -> dict[str, str | None]:
    """Create the version with its gate tags, point ``challenger`` at it and, on pass, ``champion``
    (unless ``promote`` is false: then a canary rollout decides). Done by the tracking process
    (``tracking_jobs.register_and_promote``): the version is created and tagged before any alias
    moves, and the alias moves are one change, restored on failure."""
    return tracker.submit(
        tracking_jobs.register_and_promote,
        cfg.tracking_uri,
        cfg.registry.model_name,
        model_uri,
        run_id,
        decision,
        lineage,
        reason,
        flow_run,
        promote,
    ).result()
