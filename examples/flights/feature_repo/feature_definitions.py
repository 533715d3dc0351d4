"""Feast definitions of the flights example: entities, parquet sources, feature views, the model's service.

The parquet files are written by the `features` flow. Their folder comes from EVERGREEN_FEATURE_DIR
(set by Evergreen's flows and by `evergreen feast`), else from EVERGREEN_HOME (plain `feast` here).
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, String

from evergreen.feature_store import feature_dir

FEATURE_DIR = feature_dir("flights")


def _source(name: str) -> FileSource:
    # One parquet file per view; event_timestamp = when the value became known, created = tie-break.
    return FileSource(
        name=f"{name}_source",
        path=f"{FEATURE_DIR}/{name}.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )


# The departure airport: weather is observed per origin.
airport = Entity(name="airport", join_keys=["origin"], value_type=ValueType.STRING)
# The physical aircraft: its own recent arrivals and its static attributes.
aircraft = Entity(name="aircraft", join_keys=["tailnum"], value_type=ValueType.STRING)
# The airline: its recent on-time record.
carrier = Entity(name="carrier", join_keys=["carrier"], value_type=ValueType.STRING)
# An origin-destination pair: congestion and weather patterns of the route.
route = Entity(name="route", join_keys=["route"], value_type=ValueType.STRING)

# Hourly weather at the origin; stale after 3 h, when a missing report must read as unknown.
origin_weather = FeatureView(
    name="origin_weather",
    entities=[airport],
    ttl=timedelta(hours=3),
    schema=[
        Field(name=c, dtype=Float64)
        for c in ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib")
    ],
    source=_source("origin_weather"),
)

# The aircraft's arrivals before prediction time: delays propagate through the day's rotation.
aircraft_history = FeatureView(
    name="aircraft_history",
    entities=[aircraft],
    ttl=timedelta(days=7),
    schema=[
        Field(name=c, dtype=Float64)
        for c in (
            "arrivals_24h",
            "mean_arr_delay_24h",
            "delayed_share_24h",
            "arrivals_7d",
            "mean_arr_delay_7d",
            "delayed_share_7d",
            "last_arr_delay",
            "last_dep_delay",
        )
    ],
    source=_source("aircraft_history"),
)

# Daily carrier delay rates over 7 / 30 days of outcomes already known; stale after 2 days.
carrier_stats = FeatureView(
    name="carrier_stats",
    entities=[carrier],
    ttl=timedelta(days=2),
    schema=[
        Field(name=c, dtype=Float64)
        for c in ("carrier_flights_7d", "carrier_delay_rate_7d", "carrier_flights_30d", "carrier_delay_rate_30d")
    ],
    source=_source("carrier_stats"),
)

# Daily route delay rates over 7 / 30 days; stale after 2 days.
route_stats = FeatureView(
    name="route_stats",
    entities=[route],
    ttl=timedelta(days=2),
    schema=[
        Field(name=c, dtype=Float64)
        for c in ("route_flights_7d", "route_delay_rate_7d", "route_flights_30d", "route_delay_rate_30d")
    ],
    source=_source("route_stats"),
)

# Static plane attributes (age, size, engines); they never expire (ttl 0 = forever).
plane_attributes = FeatureView(
    name="plane_attributes",
    entities=[aircraft],
    ttl=timedelta(0),
    schema=[
        Field(name="plane_year", dtype=Float64),
        Field(name="plane_type", dtype=String),
        Field(name="plane_engines", dtype=Float64),
        Field(name="plane_seats", dtype=Float64),
        Field(name="plane_engine", dtype=String),
    ],
    source=_source("plane_attributes"),
)

# The features the flight-delay model is trained and served with: one name to version them by.
flight_delay_v1 = FeatureService(
    name="flight_delay_v1",
    features=[origin_weather, aircraft_history, carrier_stats, route_stats, plane_attributes],
)
