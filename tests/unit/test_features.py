import pandas as pd

from evergreen.features import build_aircraft_history, build_carrier_stats, learn_categories, to_model_frame

T0 = pd.Timestamp("2013-03-01T00:00Z")


def _arrivals(rows):
    f = pd.DataFrame(rows, columns=["tailnum", "known_at", "arr_delay", "dep_delay", "delayed", "carrier"])
    f["known_at"] = pd.to_datetime(f["known_at"], utc=True)
    return f


def test_aircraft_history_uses_only_arrivals_up_to_each_stamp():
    f = _arrivals(
        [
            ("N1", "2013-03-01T08:00Z", 10.0, 5.0, 0, "UA"),
            ("N1", "2013-03-01T12:00Z", 50.0, 40.0, 1, "UA"),
            ("N1", "2013-03-02T13:00Z", 0.0, 0.0, 0, "UA"),  # 25 h after the first: the first leaves 24 h
            ("N2", "2013-03-01T09:00Z", 100.0, 90.0, 1, "AA"),
        ]
    )
    h = build_aircraft_history(f, T0).set_index(["tailnum", "event_timestamp"])
    first = h.loc[("N1", pd.Timestamp("2013-03-01T08:00Z"))]
    second = h.loc[("N1", pd.Timestamp("2013-03-01T12:00Z"))]
    third = h.loc[("N1", pd.Timestamp("2013-03-02T13:00Z"))]
    assert first["arrivals_24h"] == 1 and first["mean_arr_delay_24h"] == 10
    assert second["arrivals_24h"] == 2 and second["mean_arr_delay_24h"] == 30
    assert third["arrivals_24h"] == 1 and third["arrivals_7d"] == 3  # 08:00 is 29 h back, 12:00 is 25 h back
    assert h.loc[("N2", pd.Timestamp("2013-03-01T09:00Z")), "mean_arr_delay_24h"] == 100  # no mixing of aircraft


def test_daily_rates_are_stamped_the_day_after_the_outcomes():
    f = _arrivals(
        [
            ("N1", "2013-03-01T08:00Z", 30.0, 0.0, 1, "UA"),
            ("N2", "2013-03-01T20:00Z", 0.0, 0.0, 0, "UA"),
            ("N3", "2013-03-02T10:00Z", 0.0, 0.0, 0, "UA"),
        ]
    )
    s = build_carrier_stats(f, T0).set_index("event_timestamp")
    assert s.index.min() == pd.Timestamp("2013-03-02T00:00Z")  # nothing of 1 March visible before 2 March
    assert s.loc[pd.Timestamp("2013-03-02T00:00Z"), "carrier_delay_rate_7d"] == 0.5
    assert abs(s.loc[pd.Timestamp("2013-03-03T00:00Z"), "carrier_delay_rate_7d"] - 1 / 3) < 1e-12


def test_model_frame_maps_unseen_categories_to_missing():
    train = pd.DataFrame({"carrier": ["UA", "AA"], "distance": [100, 200]})
    cats = learn_categories(train, ["carrier", "distance"])
    x = to_model_frame(pd.DataFrame({"carrier": ["ZZ", "UA"], "distance": ["5", None]}), ["carrier", "distance"], cats)
    assert cats == {"carrier": ["AA", "UA"]}
    assert x["carrier"].isna().tolist() == [True, False]
    assert x["distance"].tolist()[0] == 5.0 and pd.isna(x["distance"].tolist()[1])
