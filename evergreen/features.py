"""Feature tables: pure pandas, each row stamped with the instant its values became known.

Each table is written as one parquet file that a Feast feature view reads. ``event_timestamp`` is when
the value became known; ``created`` is when it was computed (the tie-break Feast uses).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# Request-time fields: known when the flight is scheduled, sent with every prediction request.
# Not the month: a model trained on a few months would meet an unseen value on every new month.
REQUEST_FEATURES = ["carrier", "origin", "dest", "distance", "dep_hour", "day_of_week"]
CATEGORICAL = ["carrier", "origin", "dest", "plane_type", "plane_engine"]
ENTITY_COLUMNS = [
    "flight_id",
    "tailnum",
    "origin",
    "carrier",
    "route",
    "dest",
    "distance",
    "dep_hour",
    "day_of_week",
    "month",
    "prediction_time",
]
WEATHER_COLUMNS = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
STATIC_PLANE_TIME = pd.Timestamp("2000-01-01", tz="UTC")
WEATHER_REPORT_DELAY = pd.Timedelta(hours=1)  # hour h's observation is complete at h + 1 h


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


def _daily_rates(flights: pd.DataFrame, key: str, prefix: str, computed_at: pd.Timestamp) -> pd.DataFrame:
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


def build_carrier_stats(flights: pd.DataFrame, computed_at: pd.Timestamp) -> pd.DataFrame:
    return _daily_rates(flights, "carrier", "carrier", computed_at)


def build_route_stats(flights: pd.DataFrame, computed_at: pd.Timestamp) -> pd.DataFrame:
    return _daily_rates(flights, "route", "route", computed_at)


def build_planes(planes: pd.DataFrame, computed_at: pd.Timestamp) -> pd.DataFrame:
    p = planes[["tailnum", "year", "type", "engines", "seats", "engine"]].copy()
    p.columns = ["tailnum", "plane_year", "plane_type", "plane_engines", "plane_seats", "plane_engine"]
    p[["plane_year", "plane_engines", "plane_seats"]] = p[["plane_year", "plane_engines", "plane_seats"]].astype(
        "float64"
    )
    p[["plane_type", "plane_engine"]] = p[["plane_type", "plane_engine"]].astype(str)
    p["event_timestamp"] = STATIC_PLANE_TIME  # static attributes, known before any flight
    return _created(p.drop_duplicates("tailnum", keep="last").reset_index(drop=True), computed_at)


def build_feature_tables(
    flights: pd.DataFrame, weather: pd.DataFrame, planes: pd.DataFrame, computed_at: pd.Timestamp | None = None
) -> dict[str, pd.DataFrame]:
    """All feature tables from prepared flights (see ``data.prepare_flights``) and raw weather/planes."""
    computed_at = computed_at or pd.Timestamp.now(tz="UTC")
    return {
        "origin_weather": build_weather(weather, computed_at),
        "aircraft_history": build_aircraft_history(flights, computed_at),
        "carrier_stats": build_carrier_stats(flights, computed_at),
        "route_stats": build_route_stats(flights, computed_at),
        "plane_attributes": build_planes(planes, computed_at),
    }


def write_feature_tables(tables: dict[str, pd.DataFrame], folder: Path) -> dict[str, Path]:
    """Write each table atomically (temp file + rename) so a reader never sees half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in tables.items():
        path = folder / f"{name}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
        paths[name] = path
    return paths


def entity_frame(flights: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Prediction requests for flights whose prediction time lies in [start, end), with labels."""
    mask = (flights["prediction_time"] >= start) & (flights["prediction_time"] < end)
    ent = flights.loc[mask, [*ENTITY_COLUMNS, "delayed", "known_at"]].copy()
    ent = ent.rename(columns={"prediction_time": "event_timestamp"})
    ent["distance"] = ent["distance"].astype("float64")
    return ent.sort_values(["event_timestamp", "flight_id"]).reset_index(drop=True)


def model_columns(feature_names: list[str]) -> list[str]:
    """Model inputs: request-time fields plus the feature service's features, in a fixed order."""
    return [*REQUEST_FEATURES, *[f for f in feature_names if f not in REQUEST_FEATURES]]


def to_model_frame(frame: pd.DataFrame, columns: list[str], categories: dict[str, list[str]]) -> pd.DataFrame:
    """Cast to the model's dtypes: categoricals with the training vocabulary, the rest float64."""
    x = frame[columns].copy()
    for col in columns:
        if col in categories:
            x[col] = pd.Categorical(x[col].astype("string").astype(object), categories=categories[col])
        else:
            x[col] = pd.to_numeric(x[col], errors="coerce").astype("float64")
    return x


def learn_categories(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[str]]:
    return {c: sorted(frame[c].dropna().astype(str).unique().tolist()) for c in columns if c in CATEGORICAL}


__all__ = [
    "CATEGORICAL",
    "REQUEST_FEATURES",
    "build_feature_tables",
    "entity_frame",
    "learn_categories",
    "model_columns",
    "to_model_frame",
    "write_feature_tables",
]
