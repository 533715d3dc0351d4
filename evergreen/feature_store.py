"""Feast wiring: one store built from Evergreen's config, apply, backfill, point-in-time retrieval.

The config is built in code (same content as the problem's ``feature_repo/feature_store.yaml``) so
that the state follows the Evergreen config; the definitions are the repo's own module. The offline
store is ``features.offline_store``: Evergreen's ASOF JOIN store (``evergreen.asof_store``) or Feast's
own duckdb store, which give the same point-in-time joins.

Each features run builds a whole snapshot (tables, registry entries, online values) and publishes it
in one step. On the embedded default a snapshot is a folder with its own registry and SQLite online
store, published by swapping a link. With shared stores (``features.registry_url``, ``online_url``,
``files_url``: workers on several machines) a snapshot is a Feast project of its own in the SQL
registry and Redis, its tables under ``<files_url>/<project>@<stamp>/``, and the published one is
named by ``<files_url>/<project>.published``, written in one put.
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
from urllib.parse import unquote, urlsplit

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
    cfg = pinned(cfg)
    path = cfg.feast_repo / DEFINITIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: Feast definitions not found; features.feast_repo must point at the problem's Feast repo"
        )
    os.environ["EVERGREEN_FEATURE_DIR"] = cfg.features_dir
    name = f"_evergreen_feast_defs_{abs(hash(str(cfg.features_dir)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def redis_connection_string(url: str) -> str:
    """Feast's Redis connection string ("host:port,db=0,ssl=true,password=...") from a redis:// URL."""
    parts = urlsplit(url)
    settings = [f"{parts.hostname or 'localhost'}:{parts.port or 6379}"]
    if parts.path.strip("/"):
        settings.append(f"db={parts.path.strip('/')}")
    if parts.scheme == "rediss":
        settings.append("ssl=true")
    if parts.password:
        settings.append(f"password={unquote(parts.password)}")
    return ",".join(settings)


def repo_settings(cfg: EvergreenConfig) -> dict[str, Any]:
    """The content of a feature_store.yaml for this config's Feast snapshot."""
    from evergreen.asof_store import STORE_TYPE

    features = cfg.features
    registry: str | dict[str, Any] = cfg.feast_registry
    if features.registry_url:
        # A short cache: a gateway sees a newly published snapshot's project within a minute.
        registry = {"registry_type": "sql", "path": features.registry_url, "cache_ttl_seconds": 60}
    online: dict[str, Any] = {"type": "sqlite", "path": cfg.feast_online_store}
    if features.online_url:
        online = {"type": "redis", "connection_string": redis_connection_string(features.online_url)}
    return {
        "project": cfg.feast_project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": STORE_TYPE if features.offline_store == "asof" else "duckdb"},
        "entity_key_serialization_version": 3,
    }


def get_store(cfg: EvergreenConfig) -> FeatureStore:
    """The Feast store of the config's snapshot (the published one unless it names another)."""
    from feast import FeatureStore, RepoConfig

    _quiet_feast()
    cfg = pinned(cfg)
    if cfg.feast_is_local:
        Path(cfg.feast_dir).mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=RepoConfig(**repo_settings(cfg), repo_path=str(cfg.feast_repo)))


def feature_dir(project: str) -> str:
    """The folder (or s3:// prefix) of a Feast repo's feature tables, for its feature_definitions.py.

    EVERGREEN_FEATURE_DIR when set: the flows set it to the snapshot they build, ``evergreen feast``
    to the published one. Else the published state under EVERGREEN_HOME, which the repo's
    feature_store.yaml reads too. Neither set: an error, not a path into a home that does not exist.
    """
    folder = os.environ.get("EVERGREEN_FEATURE_DIR", "").strip()
    if folder:
        return folder
    home = os.environ.get("EVERGREEN_HOME", "").strip()
    if not home:
        raise RuntimeError(
            f"Feast repo {project!r}: EVERGREEN_HOME is not set, so its feature tables cannot be found. "
            "Run Feast's CLI as `evergreen [--config CONFIG] feast -- <feast arguments>`, or export "
            "EVERGREEN_HOME=<absolute path of the home the features flow wrote> before `feast`."
        )
    return str(Path(home).expanduser() / "feast" / project / "features")


def feast_cli(cfg: EvergreenConfig, args: list[str]) -> int:
    """Run Feast's CLI on the published snapshot of this config's home; returns its exit code.

    A feature_store.yaml for the snapshot is written to a temporary folder and passed with
    ``--feature-store-yaml``; ``--chdir`` is the problem's Feast repo (its definitions, for ``apply``
    and ``plan``). The snapshot is resolved once, so a features run publishing meanwhile cannot mix
    two snapshots under one command.
    """
    snapshot = pinned(cfg, resolve=True)
    with tempfile.TemporaryDirectory(prefix="evergreen-feast-") as tmp:
        settings = Path(tmp) / "feature_store.yaml"
        settings.write_text(yaml.safe_dump(repo_settings(snapshot), sort_keys=False))
        env = {**os.environ, "EVERGREEN_FEATURE_DIR": snapshot.features_dir, "EVERGREEN_HOME": str(cfg.home)}
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

POINTER_SUFFIX = ".published"


def _s3(url: str) -> tuple[Any, str]:
    """pyarrow's S3 filesystem (AWS_* variables: credentials, region, AWS_ENDPOINT_URL) and the path."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(url)
    return filesystem, path


def _pointer(cfg: EvergreenConfig) -> tuple[Any, str]:
    """Where the name of the published snapshot is kept in S3."""
    return _s3(f"{cfg.feast_root}/{cfg.features.project}{POINTER_SUFFIX}")


def published_snapshot(cfg: EvergreenConfig) -> str | None:
    """The name of the published snapshot ("<project>@<stamp>"), or None when nothing is published."""
    if not cfg.feast_is_local:
        filesystem, path = _pointer(cfg)
        try:
            with filesystem.open_input_stream(path) as stream:
                return str(stream.read().decode().strip()) or None
        except FileNotFoundError:
            return None
    live = cfg.published_feast_dir
    if live.is_symlink():
        return Path(os.readlink(live)).name
    # State written before snapshots: the folder itself is the published state.
    return live.name if (live / "registry.db").is_file() else None


def pinned(cfg: EvergreenConfig, resolve: bool = False) -> EvergreenConfig:
    """The config with its snapshot named: the published one unless it names one already.

    Locally an unnamed snapshot reads through the published link (unless ``resolve``). Shared stores
    need the name (it is the Feast project): a run pins its config once, at its start, so that it
    never mixes two snapshots and reads the pointer once.
    """
    local = cfg.feast_is_local and not cfg.features.shared_stores
    if cfg.feast_state is not None or (local and not resolve):
        return cfg
    name = published_snapshot(cfg)
    if name is None:
        where = f" --config {cfg.source_file}" if cfg.source_file else ""
        raise FileNotFoundError(
            f"no published Feast snapshot of {cfg.features.project!r} in {cfg.feast_root} (home {cfg.home}): "
            f"build one first with `python -m flows.features{where}`"
        )
    return cfg.model_copy(update={"feast_state": name})


def stage_snapshot(cfg: EvergreenConfig) -> EvergreenConfig:
    """The config of a new, empty snapshot beside the published one (tables, registry, online store)."""
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    staged = cfg.model_copy(update={"feast_state": f"{cfg.features.project}@{stamp}"})
    if staged.feast_is_local:
        Path(staged.feast_dir).mkdir(parents=True)
    return staged


def publish_snapshot(staged: EvergreenConfig) -> str:
    """Make the staged snapshot the published one in one step; returns its location.

    Locally that is an atomic rename of the link readers follow; in S3 one put of the pointer object.
    Readers opening the state after this see the new snapshot whole, never a mix. The previous
    snapshot stays (a run that opened it can finish reading); older ones are retired.
    """
    assert staged.feast_state is not None
    previous = published_snapshot(staged)
    if staged.feast_is_local:
        live = staged.published_feast_dir
        if live.exists() and not live.is_symlink():  # state written before snapshots: becomes one
            previous = f"{live.name}@0-unversioned"
            live.rename(live.with_name(previous))
        link = live.with_name(f".{live.name}.link")
        link.unlink(missing_ok=True)
        link.symlink_to(staged.feast_state)  # relative: the home can move
        os.replace(link, live)
    else:
        filesystem, path = _pointer(staged)
        with filesystem.open_output_stream(path) as stream:
            stream.write(staged.feast_state.encode())
    # Snapshot names sort by time: those older than the one just replaced have no reader left.
    for name in snapshot_names(staged):
        if previous is not None and name < previous:
            retire_snapshot(staged.model_copy(update={"feast_state": name}))
    return staged.feast_dir


def discard_snapshot(staged: EvergreenConfig) -> None:
    """Remove a staged snapshot that was not published (the published one is untouched)."""
    if staged.feast_state is not None:
        retire_snapshot(staged)


def snapshot_names(cfg: EvergreenConfig) -> list[str]:
    """Every snapshot of the config's project whose tables are under ``feast_root``, oldest first."""
    prefix = f"{cfg.features.project}@"
    if cfg.feast_is_local:
        root = Path(cfg.feast_root)
        names = [p.name for p in root.glob(f"{prefix}*")] if root.is_dir() else []
    else:
        from pyarrow import fs

        filesystem, path = _s3(cfg.feast_root)
        infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
        names = [i.base_name for i in infos if i.type == fs.FileType.Directory and i.base_name.startswith(prefix)]
    return sorted(names)


def retire_snapshot(snapshot: EvergreenConfig) -> None:
    """Delete one snapshot whole: its Feast project in shared stores, then its tables.

    Best effort: a snapshot half-built by a crashed run may lack some parts; what is left is retired
    with the next publish.
    """
    if snapshot.features.shared_stores:
        with contextlib.suppress(Exception):
            store = get_store(snapshot)
            from feast.infra.provider import get_provider

            views = store.list_feature_views()
            get_provider(store.config).teardown_infra(store.project, views, store.list_entities())
            store.registry.delete_project(store.project, commit=True)
    if snapshot.feast_is_local:
        shutil.rmtree(snapshot.feast_dir, ignore_errors=True)
    else:
        filesystem, path = _s3(snapshot.feast_dir)
        with contextlib.suppress(FileNotFoundError):
            filesystem.delete_dir(path)


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


def path_of(cfg: EvergreenConfig, view: str) -> str:
    return f"{pinned(cfg).features_dir}/{view}.parquet"
