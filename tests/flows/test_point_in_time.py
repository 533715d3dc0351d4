"""No value from after the prediction time reaches a training row: built through the real pipeline
(raw flights -> feature tables -> `feast apply` -> Feast duckdb point-in-time join) in a temp repo."""

import pandas as pd
import pytest

from evergreen import feature_store
from evergreen.config import load_config
from evergreen.feature_store import join_keys
from evergreen.features import entity_frame, write_feature_tables
from tests.conftest import write_config

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine


def _flight(n, tail, sched_utc, dep_delay, air_time, arr_delay, carrier="UA"):
    t = pd.Timestamp(sched_utc)
    return {
        "year": 2013,
        "month": t.month,
        "day": t.day,
        "dep_time": 1,
        "sched_dep_time": 1,
        "dep_delay": dep_delay,
        "arr_time": 1,
        "sched_arr_time": 1,
        "arr_delay": arr_delay,
        "carrier": carrier,
        "flight": n,
        "tailnum": tail,
        "origin": "EWR",
        "dest": "ORD",
        "air_time": air_time,
        "distance": 719,
        "hour": t.hour,
        "minute": t.minute,
        "time_hour": t.floor("h").strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory, flights_problem):
    tmp = tmp_path_factory.mktemp("pit")
    cfg = load_config(write_config(tmp / "c.yaml", tmp / "home"))
    raw = pd.DataFrame(
        [
            _flight(1, "N1", "2013-03-01T06:00Z", 0, 60, 5),  # known at 08:00
            _flight(2, "N1", "2013-03-01T10:00Z", 240, 60, 300),  # very late: known at 16:00 only
            _flight(3, "N1", "2013-03-01T15:00Z", 0, 60, 0),  # predicted at 13:00: must not see flight 2
            _flight(4, "N1", "2013-03-01T18:30Z", 0, 60, 0),  # predicted at 16:30: sees flight 2, not 3
            _flight(5, "N2", "2013-03-02T15:00Z", 0, 60, 0),  # predicted 2 March: sees 1 March rates
        ]
    )
    flights = flights_problem.prepare({"flights": raw})  # lead time 2 h, threshold 15 min
    weather = pd.DataFrame(
        {
            "origin": "EWR",
            "temp": [30.0, 99.0],
            "dewp": 20.0,
            "humid": 50.0,
            "wind_dir": 10.0,
            "wind_speed": 5.0,
            "wind_gust": None,
            "precip": 0.0,
            "pressure": 1010.0,
            "visib": 10.0,
            # the 07:00 report is complete at 08:00; the 14:00 one at 15:00
            "time_hour": ["2013-03-01T07:00:00Z", "2013-03-01T14:00:00Z"],
        }
    )
    planes = pd.DataFrame(
        {
            "tailnum": ["N1"],
            "year": [2004],
            "type": ["Fixed wing multi engine"],
            "manufacturer": ["X"],
            "model": ["Y"],
            "engines": [2],
            "seats": [55],
            "engine": ["Turbo-fan"],
        }
    )
    tables = {"flights": raw, "weather": weather, "planes": planes}
    write_feature_tables(
        flights_problem.build_feature_tables(tables, flights, pd.Timestamp("2026-01-01", tz="UTC")), cfg.features_dir
    )
    feature_store.apply_repo(cfg)
    keys = join_keys(feature_store.get_store(cfg), cfg.features.feature_service)
    ents = entity_frame(
        flights, cfg.problem, pd.Timestamp("2013-02-01", tz="UTC"), pd.Timestamp("2013-04-01", tz="UTC"), keys
    )
    out = feature_store.historical_features(cfg, ents)
    return cfg, flights, out.set_index("flight_id")


def _row(world, n):
    _, flights, out = world
    return out.loc[flights.loc[flights["flight"] == n, "flight_id"].item()]


def test_a_late_arrival_does_not_leak_into_an_earlier_prediction(world):
    b = _row(world, 3)
    assert b["last_arr_delay"] == 5  # flight 2 (300 min late) had not arrived by 13:00
    assert b["arrivals_24h"] == 1


def test_the_same_arrival_is_used_once_it_is_known(world):
    c = _row(world, 4)
    assert c["last_arr_delay"] == 300 and c["arrivals_24h"] == 2


def test_weather_respects_report_time_and_ttl(world):
    assert pd.isna(_row(world, 1)["temp"])  # predicted 04:00: no report yet
    assert _row(world, 2)["temp"] == 30.0  # predicted 08:00: the 07:00 report, complete at 08:00
    assert pd.isna(_row(world, 3)["temp"])  # 13:00: the 07:00 report is past its 3 h TTL, 14:00 not complete
    assert _row(world, 4)["temp"] == 99.0  # 16:30: the 14:00 report, complete at 15:00


def test_rows_are_kept_when_a_value_expired(world):
    _, flights, out = world
    assert len(out) == len(flights)  # no request row dropped, whatever expired


def test_daily_carrier_rates_wait_for_the_day_to_close(world):
    assert pd.isna(_row(world, 3)["carrier_delay_rate_7d"])  # 1 March outcomes not published on 1 March
    assert _row(world, 5)["carrier_delay_rate_7d"] == pytest.approx(1 / 4)  # 4 UA outcomes on 1 March, 1 late
