"""Feature tables and entity frames, whatever the problem: pure pandas.

A problem's feature tables (``Problem.build_feature_tables``) are written as one parquet file per
Feast feature view, each row stamped with ``event_timestamp`` (when its values became known) and
``created`` (when they were computed: the tie-break Feast uses). The entity frame is what a
point-in-time join is asked: one row per prediction request, ``event_timestamp`` = prediction time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from evergreen.config import ProblemConfig

EVENT_TIMESTAMP = "event_timestamp"  # Feast's name for the instant of a request (and of a value)
KNOWN_AT = "known_at"  # the entity frame's name for when a request's label became known


def write_feature_tables(tables: dict[str, pd.DataFrame], folder: str | Path) -> dict[str, str]:
    """Write one parquet file per table into a folder or an s3:// prefix; returns their locations.

    Locally each file is written aside and renamed, so a reader never sees half a file; an S3 object
    appears whole when its upload completes.
    """
    paths = {}
    for name, frame in tables.items():
        path = f"{folder}/{name}.parquet"
        if str(folder).startswith("s3://"):
            frame.to_parquet(path, index=False)  # pyarrow's S3 filesystem: AWS_* variables
        else:
            Path(folder).mkdir(parents=True, exist_ok=True)
            tmp = Path(f"{path}.tmp")
            frame.to_parquet(tmp, index=False)
            tmp.replace(path)
        paths[name] = path
    return paths


def entity_frame(
    prepared: pd.DataFrame, spec: ProblemConfig, start: pd.Timestamp, end: pd.Timestamp, keys: Sequence[str] = ()
) -> pd.DataFrame:
    """Prediction requests whose prediction time lies in [start, end), with their labels: the id, the
    request features, ``keys`` (join keys and slices), the label and ``known_at``."""
    t = prepared[spec.prediction_time]
    mask = (t >= start) & (t < end)
    columns = list(dict.fromkeys([spec.entity_id, *spec.request_features, *keys]))
    ent = prepared.loc[mask, [*columns, spec.prediction_time, spec.label, spec.known_at]]
    ent = ent.rename(columns={spec.prediction_time: EVENT_TIMESTAMP, spec.known_at: KNOWN_AT})
    return ent.sort_values([EVENT_TIMESTAMP, spec.entity_id]).reset_index(drop=True)


def latest_outcome(prepared: pd.DataFrame, spec: ProblemConfig) -> pd.Timestamp:
    """The default ``as_of``: the day after the last outcome in the data, when every label is known."""
    return pd.Timestamp(prepared[spec.known_at].max()).ceil("D")


def model_columns(request_features: Sequence[str], feature_names: Sequence[str]) -> list[str]:
    """Model inputs: request-time fields plus the feature service's features, in a fixed order."""
    return [*request_features, *[f for f in feature_names if f not in request_features]]


def to_model_frame(frame: pd.DataFrame, columns: list[str], categories: dict[str, list[str]]) -> pd.DataFrame:
    """Cast to the model's dtypes: categoricals with the training vocabulary, the rest float64."""
    x = frame[columns].copy()
    for col in columns:
        if col in categories:
            x[col] = pd.Categorical(x[col].astype("string").astype(object), categories=categories[col])
        else:
            x[col] = pd.to_numeric(x[col], errors="coerce").astype("float64")
    return x


def learn_categories(frame: pd.DataFrame, columns: Sequence[str], categorical: Sequence[str]) -> dict[str, list[str]]:
    return {c: sorted(frame[c].dropna().astype(str).unique().tolist()) for c in columns if c in categorical}


__all__ = [
    "EVENT_TIMESTAMP",
    "KNOWN_AT",
    "entity_frame",
    "latest_outcome",
    "learn_categories",
    "model_columns",
    "to_model_frame",
    "write_feature_tables",
]
