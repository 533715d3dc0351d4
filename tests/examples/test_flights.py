"""The flights example's own rules: label, instants, ids, feature tables (its problem module)."""

import inspect

import pandas as pd
import pytest

from evergreen.problem import DataError, problem_class
from tests.conftest import EXAMPLES

T0 = pd.Timestamp("2013-03-01T00:00Z")


@pytest.fixture(scope="module")
def flights():
    """The example's problem module, loaded as the flows load it."""
    return inspect.getmodule(problem_class(EXAMPLES / "flights" / "problem.py"))


def prepare_flights(frame, lead_time_hours, threshold_minutes):
    return inspect.getmodule(problem_class(EXAMPLES / "flights" / "problem.py")).prepare_flights(
        frame, lead_time_hours, threshold_minutes
    )


def _flights(**overrides):
    base = {
        "year": [2013, 2013, 2013],
        "month": [1, 1, 1],
        "day": [1, 1, 1],
        "dep_time": [517, None, 600],
        "sched_dep_time": [515, 530, 600],
        "dep_delay": [2, None, 0],
        "arr_time": [830, None, None],
        "sched_arr_time": [819, 830, 900],
        "arr_delay": [11, None, None],
        "carrier": ["UA", "UA", "AA"],
        "flight": [1, 2, 3],
        "tailnum": ["N1", None, "N3"],
        "origin": ["EWR", "LGA", "JFK"],
        "dest": ["IAH", "IAH", "MIA"],
        "air_time": [227, None, None],
        "distance": [1400, 1416, 1089],
        "hour": [5, 5, 6],
        "minute": [15, 30, 0],
        "time_hour": ["2013-01-01T10:00:00Z", "2013-01-01T10:00:00Z", "2013-01-01T11:00:00Z"],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_label_counts_cancelled_and_diverted_as_delayed():
    f = prepare_flights(_flights(), lead_time_hours=2, threshold_minutes=15)
    assert f["delayed"].tolist() == [0, 1, 1]  # on time, cancelled, diverted
    assert f["cancelled"].tolist() == [False, True, True]


def test_instants_are_utc_and_known_at_is_after_arrival():
    f = prepare_flights(_flights(), lead_time_hours=2, threshold_minutes=15)
    assert f.loc[0, "sched_dep_utc"] == pd.Timestamp("2013-01-01T10:15Z")
    assert f.loc[0, "prediction_time"] == pd.Timestamp("2013-01-01T08:15Z")
    # departed 2 min late, 227 min in the air: the outcome cannot be known before 14:04 UTC
    assert f.loc[0, "known_at"] >= pd.Timestamp("2013-01-01T14:04Z")
    assert (f["known_at"] > f["sched_dep_utc"]).all()
    assert f.loc[0, "dep_hour"] == 5  # local New York hour
    assert f.loc[1, "tailnum"] == "UNKNOWN"


def test_threshold_is_strict():
    f = prepare_flights(_flights(arr_delay=[15, 16, -3]), lead_time_hours=2, threshold_minutes=15)
    assert f["delayed"].tolist() == [0, 1, 0]


def test_flight_id_is_stable_and_unique(prepared_flights):
    assert prepared_flights["flight_id"].is_unique
    again = prepare_flights(prepared_flights.head(100).drop(columns=["flight_id"]), 2, 15)
    assert (again["flight_id"].to_numpy() == prepared_flights["flight_id"].head(100).to_numpy()).all()


def test_own_exports_folder_missing_table_is_named(tmp_path, flights_problem):
    _flights().to_csv(tmp_path / "flights.csv", index=False)
    with pytest.raises(DataError, match=r"table 'weather': no file weather\.parquet"):
        flights_problem.load_tables(str(tmp_path))


def test_own_exports_missing_column_names_file_and_column(tmp_path, raw_data, flights_problem):
    _flights().drop(columns=["arr_delay"]).to_parquet(tmp_path / "flights.parquet")
    raw_data["weather"].head(10).to_csv(tmp_path / "weather.csv", index=False)
    raw_data["planes"].head(10).to_csv(tmp_path / "planes.csv", index=False)
    with pytest.raises(DataError, match=r"flights\.parquet.*arr_delay.*problem\.tables\.flights\.columns"):
        flights_problem.load_tables(str(tmp_path))


def test_own_exports_in_parquet_and_csv_load(tmp_path, raw_data, flights_problem):
    _flights().to_parquet(tmp_path / "flights.parquet")
    raw_data["weather"].head(10).to_csv(tmp_path / "weather.csv", index=False)
    raw_data["planes"].head(10).to_csv(tmp_path / "planes.csv.gz", index=False)
    raw = flights_problem.load_tables(str(tmp_path))
    assert len(raw["flights"]) == 3 and raw.files["flights"][0].suffix == ".parquet"
    assert raw.files["planes"][0].name == "planes.csv.gz" and len(raw["planes"]) == 10


def test_real_data_delay_rate_swings_between_months(prepared_flights):
    by_month = prepared_flights.groupby("month")["delayed"].mean()
    assert len(prepared_flights) == 336776
    assert by_month.max() - by_month.min() > 0.15


def test_raw_batch_holds_the_window_and_its_feature_lookback(raw_data, flights_problem):
    from evergreen.config import WindowConfig
    from evergreen.training import batch_range, plan_windows

    windows = plan_windows(pd.Timestamp("2013-07-01", tz="UTC"), WindowConfig(train_days=60, holdout_days=7))
    lo, hi = batch_range(windows, flights_problem.spec)
    assert (lo, hi) == (windows.start - pd.Timedelta(days=31), windows.end)
    tables = flights_problem.raw_batch(raw_data, lo, hi)
    for name in ("flights", "weather"):
        hours = pd.to_datetime(raw_data[name]["time_hour"], utc=True)
        kept = hours.loc[tables[name].index]
        assert kept.between(lo, hi, inclusive="left").all()
        outside = hours.drop(tables[name].index)
        assert not outside.between(lo, hi, inclusive="left").any() and len(outside) > 0
    assert tables["planes"] is raw_data["planes"]


def _arrivals(rows):
    f = pd.DataFrame(rows, columns=["tailnum", "known_at", "arr_delay", "dep_delay", "delayed", "carrier"])
    f["known_at"] = pd.to_datetime(f["known_at"], utc=True)
    return f


def test_aircraft_history_uses_only_arrivals_up_to_each_stamp(flights):
    f = _arrivals(
        [
            ("N1", "2013-03-01T08:00Z", 10.0, 5.0, 0, "UA"),
            ("N1", "2013-03-01T12:00Z", 50.0, 40.0, 1, "UA"),
            ("N1", "2013-03-02T13:00Z", 0.0, 0.0, 0, "UA"),  # 25 h after the first: the first leaves 24 h
            ("N2", "2013-03-01T09:00Z", 100.0, 90.0, 1, "AA"),
        ]
    )
    h = flights.build_aircraft_history(f, T0).set_index(["tailnum", "event_timestamp"])
    first = h.loc[("N1", pd.Timestamp("2013-03-01T08:00Z"))]
    second = h.loc[("N1", pd.Timestamp("2013-03-01T12:00Z"))]
    third = h.loc[("N1", pd.Timestamp("2013-03-02T13:00Z"))]
    assert first["arrivals_24h"] == 1 and first["mean_arr_delay_24h"] == 10
    assert second["arrivals_24h"] == 2 and second["mean_arr_delay_24h"] == 30
    assert third["arrivals_24h"] == 1 and third["arrivals_7d"] == 3  # 08:00 is 29 h back, 12:00 is 25 h back
    assert h.loc[("N2", pd.Timestamp("2013-03-01T09:00Z")), "mean_arr_delay_24h"] == 100  # no mixing of aircraft


def test_daily_rates_are_stamped_the_day_after_the_outcomes(flights):
    f = _arrivals(
        [
            ("N1", "2013-03-01T08:00Z", 30.0, 0.0, 1, "UA"),
            ("N2", "2013-03-01T20:00Z", 0.0, 0.0, 0, "UA"),
            ("N3", "2013-03-02T10:00Z", 0.0, 0.0, 0, "UA"),
        ]
    )
    s = flights.daily_rates(f, "carrier", "carrier", T0).set_index("event_timestamp")
    assert s.index.min() == pd.Timestamp("2013-03-02T00:00Z")  # nothing of 1 March visible before 2 March
    assert s.loc[pd.Timestamp("2013-03-02T00:00Z"), "carrier_delay_rate_7d"] == 0.5
    assert abs(s.loc[pd.Timestamp("2013-03-03T00:00Z"), "carrier_delay_rate_7d"] - 1 / 3) < 1e-12
