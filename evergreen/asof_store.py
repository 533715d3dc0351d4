"""A Feast offline store whose point-in-time join is DuckDB's native ASOF JOIN.

Feast's ``duckdb`` store builds its point-in-time join with ibis: an inequality join of every entity
row with every earlier feature row of its key, then a window over the matches. At a few hundred
thousand requests that join dominates a training run. This store keeps Feast's semantics and lets
DuckDB's ASOF JOIN pick the match instead; everything else (pulls for materialisation, writes, logging)
is inherited from the ``duckdb`` store.

Semantics, per entity row and feature view (those of Feast's duckdb store):

* the feature row of the same join keys with the latest ``event_timestamp <= entity timestamp``;
* ties on ``event_timestamp`` go to the greatest created timestamp;
* with a TTL (> 0), a match older than ``entity timestamp - ttl`` reads as null (ttl 0 = forever);
* a row with no match, or with a null join key, is kept with nulls: the row count is preserved.

Unlike Feast's store, rows come back in the entity dataframe's order. Requests this store does not
plan itself (an SQL entity query, on-demand views, non-parquet sources, field mappings,
``filter_by_created_timestamp``) go to Feast's own implementation unchanged.

Parquet sources may be local files or ``s3://`` objects. S3 objects are read through pyarrow's S3
filesystem (the standard AWS_* variables: credentials, region, ``AWS_ENDPOINT_URL`` for MinIO or
another S3 API), for joins and for materialisation alike, so no DuckDB extension is needed.

    offline_store:
      type: evergreen.asof_store.AsofOfflineStore
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.errors import SavedDatasetLocationAlreadyExists
from feast.feature_view import FeatureView
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import pull_all_from_table_or_query_ibis, pull_latest_from_table_or_query_ibis
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage

STORE_TYPE = "evergreen.asof_store.AsofOfflineStore"
_ROW = "__evergreen_row"
_ENTITIES = "__evergreen_entities"
_TS = "__evergreen_ts"


class AsofOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Same options as the ``duckdb`` store (its staging location serves the inherited methods)."""

    type: Literal["evergreen.asof_store.AsofOfflineStore"] = STORE_TYPE  # type: ignore[assignment]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _prefix(fv: FeatureView) -> str:
    """The view's name in feature references ("view:feature"): its alias, with a version if pinned."""
    return str(fv.projection.name_to_use())  # type: ignore[no-untyped-call]


class _View:
    """What one feature view contributes: its source, keys, timestamps, TTL and output columns."""

    def __init__(self, fv: FeatureView, feature_refs: list[str], full_feature_names: bool) -> None:
        source = fv.batch_source
        assert isinstance(source, FileSource)
        self.path = source.path
        self.timestamp = source.timestamp_field
        self.created = source.created_timestamp_column or None
        self.keys: dict[str, str] = dict(fv.projection.join_key_map or {c.name: c.name for c in fv.entity_columns})
        self.ttl = fv.ttl or None  # Feast's test: a zero (or missing) ttl means no expiry
        prefix = _prefix(fv)
        self.features = [r.split(":")[1] for r in feature_refs if r.startswith(f"{prefix}:")]
        base = fv.projection.name_alias or fv.name
        self.outputs = [f"{base}__{f}" if full_feature_names else f for f in self.features]

    @property
    def remote(self) -> bool:
        return self.path.startswith("s3://")

    def sql(self, event_col: str, table: str | None = None) -> str:
        """This view's feature columns, one row per entity row, in the entity rows' order; ``table``
        names a registered arrow table holding the source (else DuckDB reads the local file)."""
        keys = [(f"__k{i}", feature_key, entity_key) for i, (feature_key, entity_key) in enumerate(self.keys.items())]
        src_cols = [f"{_ident(fk)} AS {k}" for k, fk, _ in keys]
        src_cols.append(f"CAST({_ident(self.timestamp)} AS TIMESTAMPTZ) AS {_TS}")
        src_cols += [_ident(f) for f in self.features]
        dedup = ""
        if self.created:
            # One row per (keys, event_timestamp): the latest created wins the tie, as in Feast.
            part = ", ".join([_ident(fk) for _, fk, _ in keys] + [_ident(self.timestamp)])
            dedup = (
                f" QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY {_ident(self.created)} DESC NULLS LAST) = 1"
            )
        on = [f"e.{_ident(ek)} = s.{k}" for k, _, ek in keys]
        on.append(f"e.{_TS} >= s.{_TS}")
        if self.ttl is None:
            values = [f"s.{_ident(f)} AS {_ident(o)}" for f, o in zip(self.features, self.outputs, strict=True)]
        else:
            # The ASOF match is the latest row in time: if it has expired, every earlier one has too.
            micros = self.ttl // timedelta(microseconds=1)
            fresh = f"s.{_TS} + to_microseconds({micros}) >= e.{_TS}"
            values = [
                f"CASE WHEN {fresh} THEN s.{_ident(f)} END AS {_ident(o)}"
                for f, o in zip(self.features, self.outputs, strict=True)
            ]
        entity_keys = "".join(f", {_ident(ek)}" for ek in dict.fromkeys(ek for _, _, ek in keys))
        return (
            f"WITH s AS (SELECT {', '.join(src_cols)} FROM {table or f'read_parquet({_literal(self.path)})'}{dedup}),\n"
            f"e AS (SELECT {_ROW}, CAST({_ident(event_col)} AS TIMESTAMPTZ) AS {_TS}{entity_keys} FROM {_ENTITIES})\n"
            f"SELECT {', '.join(values)} FROM e ASOF LEFT JOIN s ON {' AND '.join(on)} ORDER BY e.{_ROW}"
        )


def _plannable(feature_views: list[FeatureView], feature_refs: list[str]) -> bool:
    """True when every requested feature comes from a plain local parquet file this store can read."""
    views = {_prefix(fv) for fv in feature_views}
    if any(r.split(":")[0] not in views for r in feature_refs):
        return False  # on-demand feature views: Feast's own path runs their transformations
    for fv in feature_views:
        source = fv.batch_source
        if not isinstance(source, FileSource) or source.field_mapping:
            return False
        if not (isinstance(source.file_format, ParquetFormat) or source.file_format is None):
            return False
        if source.resolve_credentials():
            return False
        if not source.path.startswith("s3://") and ("://" in source.path or not Path(source.path).is_file()):
            return False
    return True


class AsofRetrievalJob(RetrievalJob):
    """Runs the point-in-time join when the frame is asked for, in a fresh in-memory DuckDB."""

    def __init__(
        self,
        entity_df: pd.DataFrame,
        event_col: str,
        views: list[_View],
        full_feature_names: bool,
        metadata: RetrievalMetadata,
        repo_path: str,
    ) -> None:
        super().__init__()
        self._entity_df = entity_df
        self._event_col = event_col
        self._views = views
        self._full_feature_names = full_feature_names
        self._metadata = metadata
        self._repo_path = repo_path

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        entities = pa.Table.from_pandas(self._entity_df, preserve_index=False)
        entities = entities.append_column(_ROW, pa.array(np.arange(len(self._entity_df), dtype=np.int64)))
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")  # as ibis sets it: naive timestamps read as UTC
            # An arrow scan has no row estimate (~1 row), and below this threshold the planner turns an
            # ASOF JOIN into a nested-loop join: quadratic in the entity rows.
            con.execute("SET asof_loop_join_threshold = 0")
            con.register(_ENTITIES, entities)
            # The entity columns go through DuckDB as well: the types Feast's store (ibis on DuckDB) returns.
            table = con.sql(f"SELECT * EXCLUDE ({_ROW}) FROM {_ENTITIES} ORDER BY {_ROW}").to_arrow_table()
            for i, view in enumerate(self._views):  # one query per view; columns appended, rows aligned
                table_name = None
                if view.remote:
                    table_name = f"__evergreen_source_{i}"
                    con.register(table_name, read_source(view.path))
                part = con.sql(view.sql(self._event_col, table_name)).to_arrow_table()
                for name in part.column_names:
                    table = table.append_column(name, part.column(name))
            return table
        finally:
            con.close()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return pd.DataFrame(self._to_arrow_internal(timeout).to_pandas())

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return []

    @property
    def metadata(self) -> RetrievalMetadata:
        return self._metadata

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool = False, timeout: int | None = None) -> None:
        """Save the result as a parquet saved dataset (the file storage Feast's duckdb store writes)."""
        source = storage.to_data_source()
        if not isinstance(source, FileSource) or not isinstance(source.file_format, ParquetFormat | None):
            raise ValueError(f"the ASOF store saves datasets as parquet files only, not to {type(source).__name__}")
        path = Path(FileSource.get_uri_for_file_path(repo_path=self._repo_path, uri=source.file_options.uri))
        if path.exists() and not allow_overwrite:
            raise SavedDatasetLocationAlreadyExists(location=source.file_options.uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.to_arrow(timeout=timeout), path)


def read_source(path: str) -> pa.Table:
    """A parquet source, local or in S3 (pyarrow's filesystems; AWS_* variables for S3)."""
    return pq.read_table(path)


def _ibis_source(source: DataSource, repo_path: str) -> Any:
    """An S3 parquet FileSource as an ibis table, for Feast's ibis pulls (materialisation)."""
    import ibis

    assert isinstance(source, FileSource)
    return ibis.memtable(read_source(source.path))


def _no_writes(table: pa.Table, source: DataSource, repo_path: str) -> None:
    raise NotImplementedError("the ASOF store's pulls are read-only")


def _s3_parquet(source: DataSource) -> bool:
    """A plain parquet source in S3: read here (Feast's store would need DuckDB's httpfs extension,
    which DuckDB downloads at run time); every other source goes to Feast's store."""
    return (
        isinstance(source, FileSource)
        and source.path.startswith("s3://")
        and isinstance(source.file_format, ParquetFormat | None)
        and not source.field_mapping
        and not source.resolve_credentials()
    )


_PULL_ARGS = (
    "join_key_columns",
    "feature_name_columns",
    "timestamp_field",
    "created_timestamp_column",
    "start_date",
    "end_date",
)


def _pull(
    duckdb_pull: Callable[..., RetrievalJob],
    ibis_pull: Callable[..., RetrievalJob],
    config: RepoConfig,
    source: DataSource,
    args: tuple[Any, ...],
) -> RetrievalJob:
    """A pull by Feast's duckdb store, or, for S3 parquet, by Feast's ibis helper on a table read
    through pyarrow (the same query, without DuckDB's httpfs)."""
    if not _s3_parquet(source):
        return duckdb_pull(config, source, *args)
    return ibis_pull(
        config=config,
        data_source=source,
        **dict(zip(_PULL_ARGS, args, strict=True)),
        data_source_reader=_ibis_source,
        data_source_writer=_no_writes,
    )


class AsofOfflineStore(DuckDBOfflineStore):
    """Feast's duckdb store with the historical retrieval planned as ASOF JOINs."""

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        """Feast's own pull (latest row per key in the range); S3 sources read through pyarrow."""
        return _pull(
            DuckDBOfflineStore.pull_latest_from_table_or_query,
            pull_latest_from_table_or_query_ibis,
            config,
            data_source,
            (join_key_columns, feature_name_columns, timestamp_field, created_timestamp_column, start_date, end_date),
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        """Feast's own pull of every row in the range; S3 sources read through pyarrow."""
        return _pull(
            DuckDBOfflineStore.pull_all_from_table_or_query,
            pull_all_from_table_or_query_ibis,
            config,
            data_source,
            (join_key_columns, feature_name_columns, timestamp_field, created_timestamp_column, start_date, end_date),
        )

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        if entity_df is None:
            raise ValueError("the ASOF store retrieves for an entity frame or SQL query; got none")
        if (
            not isinstance(entity_df, pd.DataFrame)
            or filter_by_created_timestamp
            or not _plannable(feature_views, feature_refs)
        ):
            job: RetrievalJob = DuckDBOfflineStore.get_historical_features(
                config=config,
                feature_views=feature_views,
                feature_refs=feature_refs,
                entity_df=entity_df,
                registry=registry,
                project=project,
                full_feature_names=full_feature_names,
                filter_by_created_timestamp=filter_by_created_timestamp,
            )
            return job
        schema: dict[str, Any] = dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
        event_col = offline_utils.infer_event_timestamp_from_entity_df(entity_schema=schema)
        entity_df = entity_df.copy(deep=False)
        stamps = entity_df[event_col].infer_objects()
        if pd.api.types.is_string_dtype(stamps) or pd.api.types.is_object_dtype(stamps):
            stamps = pd.to_datetime(stamps, utc=True)  # as Feast's store reads string timestamps
        entity_df[event_col] = stamps
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=list(set(entity_df.columns) - {event_col}),
            min_event_timestamp=stamps.min().to_pydatetime() if len(stamps) else None,
            max_event_timestamp=stamps.max().to_pydatetime() if len(stamps) else None,
        )
        views = [_View(fv, feature_refs, full_feature_names) for fv in feature_views]
        return AsofRetrievalJob(entity_df, event_col, views, full_feature_names, metadata, str(config.repo_path))
