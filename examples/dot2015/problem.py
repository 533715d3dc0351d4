"""US domestic flights of 2015 (DOT on-time sample shipped with popmon): will a flight leave late?

The sample holds one row per flight with its date but no clock time, so the problem is a daily one:
the evening before a day, score every flight of that day. The rules below are decided here, once, so
every later stage (features, training, drift) uses the same ones:

* label ``late`` = departure more than ``delay_threshold_minutes`` late, **or cancelled** (a flight
  that never left has no ``DEPARTURE_DELAY``; a few left the gate and were cancelled after). A
  passenger whose flight was cancelled did not leave on time.
* ``prediction_time`` = local midnight starting the flight's date (problem time zone) minus
  ``lead_hours``: the schedule day starts first in Atlantic time (San Juan), up to 2 h before
  Chicago, so 22:00 Chicago the evening before comes before any flight of the day can leave.
* ``known_at`` = when the outcome is surely known: the latest a flight of that date can have been
  scheduled (23:59 at the westernmost origin, Hawaii, at most 5 h behind Chicago) + its departure
  delay + taxi-out + 1 h of reporting margin. With no clock time in the data, the bound is
  deliberately late (most flights left many hours before it): a late bound only delays a fact, an
  early one would leak it.
* Feature snapshots are taken once a day at the next prediction time: the snapshot a day's
  requests read holds only outcomes whose ``known_at`` has passed, so a day's rates first use the
  flights of two days before.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from evergreen.problem import DataError, Problem

ROW_INDEX = "Unnamed: 0"  # the files' unnamed first column (the original row number), as pandas reads it
# A date's last departure can be scheduled 23:59 in Hawaii: up to 5 h after Chicago's midnight (4 h
# in winter, when Chicago is on standard time and Hawaii never changes).
LATEST_LOCAL_MIDNIGHT = pd.Timedelta(hours=5)
REPORTING_MARGIN = pd.Timedelta(hours=1)  # from wheels-off to the record holding the departure
# Days of outcomes per snapshot and what each window holds: the last week's level, in full, and the
# month's baseline of the same airline (which follows the season where the airline code alone cannot).
AIRLINE_WINDOWS = {
    7: ("flights", "late_rate", "cancel_rate", "mean_delay", "mean_taxi_out"),
    28: ("flights", "late_rate", "mean_delay"),
}


class Dot2015Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    delay_threshold_minutes: float = Field(15.0, ge=0)  # late = departure later than this, or cancelled
    lead_hours: float = Field(2.0, ge=0, le=24)  # predict this long before the local midnight of the date


class Dot2015(Problem):
    Params = Dot2015Params

    def locate(self, source: str) -> Path:
        if source != "popmon":
            return Path(source)
        # The data folder of the installed package, found without importing it (popmon's import pulls
        # in its whole plotting and Spark stack).
        spec = importlib.util.find_spec("popmon")
        if spec is None or spec.origin is None:
            raise DataError("the popmon package is not installed; run `uv sync` or set data.source")
        return Path(spec.origin).parent / "test_data"

    def prepare(self, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        return prepare_flights(
            tables["flights"], self.params.delay_threshold_minutes, self.params.lead_hours, self.spec.time_zone
        )

    def build_feature_tables(
        self, tables: dict[str, pd.DataFrame], prepared: pd.DataFrame, computed_at: pd.Timestamp
    ) -> dict[str, pd.DataFrame]:
        return {"airline_stats": airline_stats(prepared, self.params.lead_hours, self.spec.time_zone, computed_at)}


def day_start(day: pd.Series, lead_hours: float, time_zone: str) -> pd.Series:
    """The prediction instant (UTC) of a local date: its midnight in ``time_zone`` minus the lead."""
    midnight = pd.to_datetime(day).dt.tz_localize(time_zone, ambiguous="raise", nonexistent="raise")
    return (midnight - pd.Timedelta(hours=lead_hours)).dt.tz_convert("UTC")


def prepare_flights(flights: pd.DataFrame, threshold_minutes: float, lead_hours: float, time_zone: str) -> pd.DataFrame:
    """Add the id, instants and the label to the raw flights table (vectorised, no row loops)."""
    f = flights.rename(columns={ROW_INDEX: "row_id"})
    if f["row_id"].duplicated().any():
        dup = f.loc[f["row_id"].duplicated(), "row_id"].iloc[0]
        raise DataError(f"table 'flights': row index {dup} appears twice; the two files overlap")
    f["row_id"] = f["row_id"].astype("int64")
    date = pd.to_datetime(f["DATE"], format="%Y-%m-%d")
    f["prediction_time"] = day_start(date, lead_hours, time_zone)
    midnight = date.dt.tz_localize(time_zone).dt.tz_convert("UTC")
    delay = f["DEPARTURE_DELAY"].fillna(0).clip(lower=0)  # a cancellation is known by its scheduled time
    taxi = f["TAXI_OUT"].fillna(0)
    latest_departure = midnight + pd.Timedelta(days=1) + LATEST_LOCAL_MIDNIGHT
    f["known_at"] = (latest_departure + pd.to_timedelta(delay + taxi, unit="min") + REPORTING_MARGIN).dt.ceil("s")
    f["cancelled"] = (f["CANCELLED"] == 1).astype("int8")
    f["late"] = ((f["DEPARTURE_DELAY"] > threshold_minutes) | (f["cancelled"] == 1)).astype("int8")
    f["AIRLINE"] = f["AIRLINE"].astype(str)
    f["DISTANCE"] = f["DISTANCE"].astype("float64")
    # The weekday of the flight's own (local) date, 0 = Monday. Not the month: a model trained on three
    # months would meet an unseen value every new month.
    f["day_of_week"] = date.dt.dayofweek.astype("int16")
    return f


def airline_stats(flights: pd.DataFrame, lead_hours: float, time_zone: str, computed_at: pd.Timestamp) -> pd.DataFrame:
    """Per airline, one snapshot a day over the last 7 and 28 days of outcomes known by its instant.

    Each outcome joins the snapshot of the first prediction instant at or after its ``known_at``
    (usually the evening two days after the flight); the snapshot is stamped at that instant, so a
    request reads it only once every outcome in it was known.
    """
    local = (flights["known_at"] + pd.Timedelta(hours=lead_hours)).dt.tz_convert(time_zone).dt.tz_localize(None)
    f = pd.DataFrame(
        {
            "day": local.dt.ceil("D"),  # the local date whose prediction instant first sees the outcome
            "AIRLINE": flights["AIRLINE"],
            "flights": 1.0,
            "late": flights["late"].astype("float64"),
            "cancelled": flights["cancelled"].astype("float64"),
            # Delay and taxi-out exist only for flights that left: their means count those flights.
            "delay": flights["DEPARTURE_DELAY"].fillna(0.0),
            "delay_n": flights["DEPARTURE_DELAY"].notna().astype("float64"),
            "taxi_out": flights["TAXI_OUT"].fillna(0.0),
            "taxi_out_n": flights["TAXI_OUT"].notna().astype("float64"),
        }
    )
    daily = f.groupby(["day", "AIRLINE"]).sum().unstack("AIRLINE", fill_value=0.0)
    # Every calendar day, also those without a new outcome: the windows count days, not snapshots.
    daily = daily.reindex(pd.date_range(daily.index.min(), daily.index.max(), freq="D"), fill_value=0.0)
    columns = {}
    for days in AIRLINE_WINDOWS:
        s = daily.rolling(days, min_periods=1).sum()
        n = s["flights"]
        values = {
            "flights": n,
            "late_rate": s["late"] / n.where(n > 0),
            "cancel_rate": s["cancelled"] / n.where(n > 0),
            "mean_delay": s["delay"] / s["delay_n"].where(s["delay_n"] > 0),
            "mean_taxi_out": s["taxi_out"] / s["taxi_out_n"].where(s["taxi_out_n"] > 0),
        }
        for name in AIRLINE_WINDOWS[days]:
            columns[f"airline_{name}_{days}d"] = values[name].stack(future_stack=True)
    out = pd.DataFrame(columns).rename_axis(["day", "AIRLINE"]).reset_index()
    out["event_timestamp"] = day_start(out["day"], lead_hours, time_zone)
    # An airline gone for a whole window (US Airways after its merger) stops getting snapshots.
    longest = max(AIRLINE_WINDOWS)
    out = out[out[f"airline_flights_{longest}d"] > 0].drop(columns="day").reset_index(drop=True)
    out["created"] = computed_at
    return out
