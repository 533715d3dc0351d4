"""Replay stage wiring: champions per strategy, direct promotion, progress, outputs and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE

from evergreen import registry
from evergreen.config import EvergreenConfig
from evergreen.replay import summary_markdown, target_markdown, write_outputs
from tasks.common import markdown_artifact, table_artifact


def champion_version(cfg: EvergreenConfig) -> str | None:
    return registry.alias_version(registry.client(cfg.tracking_uri), cfg.registry.model_name, registry.CHAMPION)


@task(name="promote-without-gate", cache_policy=NONE, retries=1, retry_delay_seconds=2)
def promote_without_gate(cfg: EvergreenConfig, version: str, reason: str, flow_run: str | None) -> str | None:
    """Move ``champion`` to ``version`` whatever the gate said (the always-retrain policy); the move
    is recorded in the registry's alias log like any other. Returns the previous champion."""
    c = registry.client(cfg.tracking_uri)
    return registry.promote(c, cfg.registry.model_name, version, reason, flow_run)


class Progress:
    """A Prefect progress artifact (percent done and the current step in its description)."""

    def __init__(self, key: str, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        # Called from sync code: the sync result (Prefect types it as a sync-or-async union).
        self.id = cast(UUID, create_progress_artifact(0.0, key=key, description="replay: starting"))

    def step(self, description: str, advance: int = 1) -> None:
        self.done = min(self.done + advance, self.total)
        update_progress_artifact(self.id, 100.0 * self.done / self.total, description=description)


@task(name="save-replay-outputs", cache_policy=NONE)
def save_outputs(
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    target: dict[str, Any],
    settings: dict[str, Any],
    folder: Path,
    stem: str,
    plot_path: Path | None,
) -> dict[str, Path]:
    return write_outputs(rows, summary, target, settings, folder, stem, plot_path)


def publish(
    rows: list[dict[str, Any]], summary: list[dict[str, Any]], target: dict[str, Any], paths: dict[str, Path]
) -> None:
    """The summary, the target check and where the files are as a markdown artifact; the summary and
    the weekly table as table artifacts."""
    png = paths["png"]
    lines = [
        "# Replay: does continuous training pay?",
        "",
        summary_markdown(summary),
        "",
        target_markdown(target),
        "",
        f"Plot: [{png.name}]({png.as_uri()}) (`{png}`)",
        f"Weekly table: `{paths['weekly_csv']}`; everything: `{paths['json']}`",
    ]
    markdown_artifact("\n".join(lines), "replay-summary", "Replay summary per strategy")
    table_artifact(summary, "replay-strategies", "Replay: one row per strategy")
    table_artifact(rows, "replay-weeks", "Replay: one row per week and strategy")
