"""Feature stage: build the offline feature tables, apply the Feast repo, backfill the online store,
and retrieve point-in-time correct training frames."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from evergreen import feature_store
from evergreen.config import EvergreenConfig
from evergreen.features import write_feature_tables
from evergreen.problem import RawData, load_problem
from tasks.common import table_artifact


@task(name="build-feature-tables", cache_policy=NONE)
def build_tables(cfg: EvergreenConfig, raw: RawData, prepared: pd.DataFrame) -> dict[str, int]:
    tables = load_problem(cfg).build_feature_tables(raw.tables, prepared, pd.Timestamp.now(tz="UTC"))
    paths = write_feature_tables(tables, cfg.features_dir)
    rows = [
        {
            "view": k,
            "rows": len(v),
            "from": str(v["event_timestamp"].min()),
            "to": str(v["event_timestamp"].max()),
            "file": str(paths[k]),
        }
        for k, v in tables.items()
    ]
    table_artifact(rows, "feature-tables", "Offline feature tables written for Feast")
    return {k: len(v) for k, v in tables.items()}


@task(name="feast-apply", cache_policy=NONE, retries=1, retry_delay_seconds=2)
def apply_repo(cfg: EvergreenConfig) -> list[str]:
    return feature_store.apply_repo(cfg)


# Feast's own prints (coloured progress) are not logs: they stay out of the flow's log.
@task(name="feast-materialize", cache_policy=NONE, retries=1, retry_delay_seconds=2, log_prints=False)
def materialize(cfg: EvergreenConfig, start: pd.Timestamp, end: pd.Timestamp) -> None:
    views = feature_store.materialize(cfg, start, end)
    get_run_logger().info("materialised %s from %s to %s", ", ".join(views), start, end)


@task(name="publish-snapshot", cache_policy=NONE)
def publish(staged: EvergreenConfig) -> str:
    """Swap the staged Feast snapshot in for readers, in one step."""
    return feature_store.publish_snapshot(staged)


@task(name="retrieve-features", cache_policy=NONE)
def retrieve(cfg: EvergreenConfig, prepared: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The requests predicted in [start, end) with every feature as it was known at prediction time."""
    return feature_store.features_for(cfg, prepared, start, end)
