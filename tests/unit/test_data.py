import pandas as pd
import pytest

from evergreen.data import DataError, load_raw, prepare_flights


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


def test_own_exports_folder_missing_table_is_named(tmp_path):
    _flights().to_csv(tmp_path / "flights.csv", index=False)
    with pytest.raises(DataError, match="table 'weather' not found"):
        load_raw(str(tmp_path))


def test_own_exports_missing_column_names_file_and_column(tmp_path, raw_data):
    _flights().drop(columns=["arr_delay"]).to_parquet(tmp_path / "flights.parquet")
    raw_data.weather.head(10).to_csv(tmp_path / "weather.csv", index=False)
    raw_data.planes.head(10).to_csv(tmp_path / "planes.csv", index=False)
    with pytest.raises(DataError, match=r"flights\.parquet.*arr_delay"):
        load_raw(str(tmp_path))


def test_own_exports_in_parquet_and_csv_load(tmp_path, raw_data):
    _flights().to_parquet(tmp_path / "flights.parquet")
    raw_data.weather.head(10).to_csv(tmp_path / "weather.csv", index=False)
    raw_data.planes.head(10).to_csv(tmp_path / "planes.csv", index=False)
    raw = load_raw(str(tmp_path))
    assert len(raw.flights) == 3 and raw.files["flights"].suffix == ".parquet"


def test_real_data_delay_rate_swings_between_months(prepared_flights):
    by_month = prepared_flights.groupby("month")["delayed"].mean()
    assert len(prepared_flights) == 336776
    assert by_month.max() - by_month.min() > 0.15


def test_raw_batch_holds_the_window_and_its_feature_lookback(raw_data):
    from evergreen.config import WindowConfig
    from evergreen.training import FEATURE_LOOKBACK, plan_windows, raw_batch

    flights = prepare_flights(raw_data.flights, 2.0, 15.0)
    windows = plan_windows(pd.Timestamp("2013-07-01", tz="UTC"), WindowConfig(train_days=60, holdout_days=7))
    tables, lo, hi = raw_batch(raw_data, flights, windows)
    assert (lo, hi) == (windows.start - FEATURE_LOOKBACK, windows.end)
    kept = flights.loc[tables["flights"].index, "prediction_time"]
    assert kept.between(lo, hi, inclusive="left").all()
    outside = flights.drop(tables["flights"].index)["prediction_time"]
    assert not outside.between(lo, hi, inclusive="left").any() and len(outside) > 0
    hours = pd.to_datetime(tables["weather"]["time_hour"], utc=True)
    assert hours.min() >= lo and hours.max() < hi and len(tables["weather"]) < len(raw_data.weather)
    assert tables["planes"] is raw_data.planes
