"""Feast definitions of the DOT 2015 example: the airline entity, its daily rates, the model's service.

The parquet file is written by the `features` flow. Its folder comes from EVERGREEN_FEATURE_DIR
(set by Evergreen's flows and by `evergreen feast`), else from EVERGREEN_HOME (plain `feast` here).
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

from evergreen.feature_store import feature_dir

FEATURE_DIR = feature_dir("dot2015")

# The airline: the only key the data has besides the flight itself (no airport, no aircraft).
airline = Entity(name="airline", join_keys=["AIRLINE"], value_type=ValueType.STRING)

# Daily per-airline snapshot over 7 and 28 days of outcomes known by the evening before a flight's
# date (event_timestamp = that evening's prediction instant; created = tie-break). A snapshot is
# written every evening while the airline flew in the last 28 days: stale after 2 days, so one missed
# nightly run is bridged and a longer gap reads as unknown, not as an old level.
airline_stats = FeatureView(
    name="airline_stats",
    entities=[airline],
    ttl=timedelta(days=2),
    schema=[
        Field(name=c, dtype=Float64)
        for c in (
            "airline_flights_7d",
            "airline_late_rate_7d",
            "airline_cancel_rate_7d",
            "airline_mean_delay_7d",
            "airline_mean_taxi_out_7d",
            "airline_flights_28d",
            "airline_late_rate_28d",
            "airline_mean_delay_28d",
        )
    ],
    source=FileSource(
        name="airline_stats_source",
        path=f"{FEATURE_DIR}/airline_stats.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    ),
)

# The features the late-departure model is trained and served with: one name to version them by.
dot2015_late_v1 = FeatureService(name="dot2015_late_v1", features=[airline_stats])
