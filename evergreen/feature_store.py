"""Feast wiring: one store built from Evergreen's config, apply, backfill, point-in-time retrieval.

The config is built in code (same content as the problem's ``feature_repo/feature_store.yaml``) so
that the state folder follows ``home`` in the Evergreen config; the definitions are the repo's own module. The offline
store is ``features.offline_store``: Evergreen's ASOF JOIN store (``evergreen.asof_store``) or Feast's
own duckdb store, which give the same point-in-time joins.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from evergreen.config import EvergreenConfig
from evergreen.features import EVENT_TIMESTAMP, entity_frame

if TYPE_CHECKING:
    from feast import FeatureStore

DEFINITIONS_FILE = "feature_definitions.py"


def _quiet_feast() -> None:
    for name in ("feast", "feast.infra", "feast.feature_store"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # ibis (under Feast's duckdb store) calls a duckdb method that duckdb 1.5 deprecates.
    warnings.filterwarnings("ignore", message="fetch_arrow_table", category=DeprecationWarning)


def load_definitions(cfg: EvergreenConfig) -> ModuleType:
    """Import the repo's definitions with their sources pointing at this config's feature folder."""
    path = cfg.feast_repo / DEFINITIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: Feast definitions not found; features.feast_repo must point at the problem's Feast repo"
        )
    os.environ["EVERGREEN_FEATURE_DIR"] = str(cfg.features_dir)
    name = f"_evergreen_feast_defs_{abs(hash(str(cfg.features_dir)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def repo_settings(cfg: EvergreenConfig) -> dict[str, Any]:
    """The content of a feature_store.yaml for this config's Feast state (``cfg.feast_dir``)."""
    from evergreen.asof_store import STORE_TYPE

    return {
        "project": cfg.features.project,
        "provider": "local",
        "registry": str(cfg.feast_registry),
        "online_store": {"type": "sqlite", "path": str(cfg.feast_online_store)},
        "offline_store": {"type": STORE_TYPE if cfg.features.offline_store == "asof" else "duckdb"},
        "entity_key_serialization_version": 3,
    }


def get_store(cfg: EvergreenConfig) -> FeatureStore:
    from feast import FeatureStore, RepoConfig

    _quiet_feast()
    cfg.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=RepoConfig(**repo_settings(cfg), repo_path=str(cfg.feast_repo)))


def feature_dir(project: str) -> Path:
    """The folder of a Feast repo's feature tables, for its feature_definitions.py.

    EVERGREEN_FEATURE_DIR when set: the flows set it to the snapshot they build, ``evergreen feast``
    to the published one. Else the published state under EVERGREEN_HOME, which the repo's
    feature_store.yaml reads too. Neither set: an error, not a path into a home that does not exist.
    """
    folder = os.environ.get("EVERGREEN_FEATURE_DIR", "").strip()
    if folder:
        return Path(folder)
    home = os.environ.get("EVERGREEN_HOME", "").strip()
    if not home:
        raise RuntimeError(
            f"Feast repo {project!r}: EVERGREEN_HOME is not set, so its feature tables cannot be found. "
            "Run Feast's CLI as `evergreen [--config CONFIG] feast -- <feast arguments>`, or export "
            "EVERGREEN_HOME=<absolute path of the home the features flow wrote> before `feast`."
        )
    return Path(home).expanduser() / "feast" / project / "features"


def feast_cli(cfg: EvergreenConfig, args: list[str]) -> int:
    """Run Feast's CLI on the published snapshot of this config's home; returns its exit code.

    A feature_store.yaml for the snapshot is written to a temporary folder and passed with
    ``--feature-store-yaml``; ``--chdir`` is the problem's Feast repo (its definitions, for ``apply``
    and ``plan``). The snapshot is resolved once, so a features run publishing meanwhile cannot mix
    two snapshots under one command.
    """
    published = cfg.published_feast_dir
    if not (published / "registry.db").is_file():
        where = f" --config {cfg.source_file}" if cfg.source_file else ""
        raise FileNotFoundError(
            f"no published Feast state in {published} (home {cfg.home}): build it first with "
            f"`python -m flows.features{where}`"
        )
    snapshot = cfg.model_copy(update={"feast_state": published.resolve()})
    with tempfile.TemporaryDirectory(prefix="evergreen-feast-") as tmp:
        settings = Path(tmp) / "feature_store.yaml"
        settings.write_text(yaml.safe_dump(repo_settings(snapshot), sort_keys=False))
        env = {**os.environ, "EVERGREEN_FEATURE_DIR": str(snapshot.features_dir), "EVERGREEN_HOME": str(cfg.home)}
        argv = [sys.executable, "-m", "feast.cli.cli", "--chdir", str(cfg.feast_repo)]
        argv += ["--feature-store-yaml", str(settings), *args]
        return subprocess.run(argv, env=env, check=False).returncode


def definition_objects(module: ModuleType) -> list[Any]:
    from feast import Entity, FeatureService, FeatureView

    return [v for v in vars(module).values() if isinstance(v, Entity | FeatureView | FeatureService)]


def apply_repo(cfg: EvergreenConfig) -> list[str]:
    """Register entities, views and services (what `feast apply` does); returns the view names."""
    store = get_store(cfg)
    objects = definition_objects(load_definitions(cfg))
    store.apply(objects)
    from feast import FeatureView

    return sorted(o.name for o in objects if isinstance(o, FeatureView))


def materialize(cfg: EvergreenConfig, start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    """Backfill the online store with the latest value per entity in [start, end]; returns the views.

    An explicit range, not materialize_incremental: the first incremental run on a fresh view
    starts at now - TTL and would write nothing for historical data. Feast prints its progress
    with terminal colour codes whatever the output is; the caller logs one plain line instead.
    """
    store = get_store(cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        store.materialize(start_date=start.to_pydatetime(), end_date=end.to_pydatetime())
    return sorted(v.name for v in store.list_feature_views())


# ── snapshots: a features run builds its whole Feast state aside and publishes it in one step ──────


def stage_snapshot(cfg: EvergreenConfig) -> EvergreenConfig:
    """The config of a new, empty snapshot beside the published one (tables, registry, online store)."""
    live = cfg.published_feast_dir
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    staged = live.with_name(f"{live.name}@{stamp}")
    staged.mkdir(parents=True)
    return cfg.model_copy(update={"feast_state": staged})


def publish_snapshot(staged: EvergreenConfig) -> Path:
    """Make the staged snapshot the published one: one atomic rename of the link readers follow.

    Readers opening the state after this see the new snapshot whole, never a mix. The previous
    snapshot stays (a run that opened it can finish reading); older ones are removed.
    """
    assert staged.feast_state is not None
    live = staged.published_feast_dir
    previous = live.resolve().name if live.is_symlink() else None
    if live.exists() and previous is None:  # state written before snapshots: becomes one
        previous = f"{live.name}@0-unversioned"
        live.rename(live.with_name(previous))
    link = live.with_name(f".{live.name}.link")
    link.unlink(missing_ok=True)
    link.symlink_to(staged.feast_state.name)  # relative: the home can move
    os.replace(link, live)
    # Snapshot names sort by time: those older than the one just replaced have no reader left.
    for old in live.parent.glob(f"{live.name}@*"):
        if previous is not None and old.name < previous:
            shutil.rmtree(old, ignore_errors=True)
    return staged.feast_state


def discard_snapshot(staged: EvergreenConfig) -> None:
    """Remove a staged snapshot that was not published (the published one is untouched)."""
    if staged.feast_state is not None:
        shutil.rmtree(staged.feast_state, ignore_errors=True)


def feature_names(cfg: EvergreenConfig) -> list[str]:
    store = get_store(cfg)
    service = store.get_feature_service(cfg.features.feature_service)
    return [f.name for proj in service.feature_view_projections for f in proj.features]


def join_keys(store: FeatureStore, service_name: str) -> list[str]:
    """The entity columns the service's feature views are joined on."""
    service = store.get_feature_service(service_name)
    keys: dict[str, None] = {}
    for proj in service.feature_view_projections:
        view = store.get_feature_view(proj.name)
        for col in view.entity_columns:
            keys[proj.join_key_map.get(col.name, col.name)] = None
    return list(keys)


def features_for(cfg: EvergreenConfig, prepared: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The requests predicted in [start, end) with their point-in-time features."""
    store = get_store(cfg)
    keys = [*join_keys(store, cfg.features.feature_service), *cfg.gate.slices]
    entities = entity_frame(prepared, cfg.problem, start, end, keys)
    if entities.empty:
        t = prepared[cfg.problem.prediction_time]
        raise ValueError(
            f"no rows with a prediction time in [{start}, {end}): as_of lies outside the data ({t.min()} .. {t.max()})"
        )
    return historical_features(cfg, entities, store)


def historical_features(
    cfg: EvergreenConfig, entity_df: pd.DataFrame, store: FeatureStore | None = None
) -> pd.DataFrame:
    """Point-in-time join of the feature service onto ``entity_df`` (one row per prediction request).

    Row order and count are preserved: every request row comes back, with nulls where no value was
    known in time (or it had expired by TTL).
    """
    store = store or get_store(cfg)
    service = store.get_feature_service(cfg.features.feature_service)
    job = store.get_historical_features(entity_df=entity_df, features=service)
    out = job.to_df()
    if len(out) != len(entity_df):
        raise RuntimeError(f"point-in-time join returned {len(out)} rows for {len(entity_df)} requests")
    return out.sort_values([EVENT_TIMESTAMP, cfg.problem.entity_id]).reset_index(drop=True)


def online_features(cfg: EvergreenConfig, rows: list[dict[str, Any]]) -> pd.DataFrame:
    store = get_store(cfg)
    service = store.get_feature_service(cfg.features.feature_service)
    return store.get_online_features(features=service, entity_rows=rows).to_df()


def path_of(cfg: EvergreenConfig, view: str) -> Path:
    return cfg.features_dir / f"{view}.parquet"
