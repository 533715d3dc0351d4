"""Contracts learned from reference data, kept beside the hand-written suites.

The hand-written suites (``<suites>/<suite>.json``) say what the data must be: ranges, uniqueness, the
label's rate. The learned ones (``<suites>/learned/<suite>.json``, written by ``evergreen
learn-suites`` and committed like any suite) say what it has been, column by column:

* every column's share of values present, at least what 95% of the reference's weeks reach less a
  tolerance: a flood of missing values fails on the column it happens in;
* every categorical column's values in the set seen in the reference, but for a small share (new
  categories do appear): an unknown code fails on its own column, not as a symptom in a joined one.

Both kinds are plain GX expectations, run with the hand-written ones on every batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from evergreen.config import EvergreenConfig
from evergreen.features import EVENT_TIMESTAMP, model_columns
from evergreen.problem import as_utc, load_problem, prepare_checked
from evergreen.validation import LEARNED

NULL_TOLERANCE = 0.10  # below the lowest weekly non-null share of the reference
CATEGORY_TOLERANCE = 0.01  # share of a batch's values that may lie outside the learned set
MAX_CATEGORIES = 1000  # more distinct values than this is an identifier, not a category
MIN_WEEK_ROWS = 50  # weeks with fewer rows say little about a share
WEEK_QUANTILE = 0.05  # the share most weeks (95%) reach


def learn_expectations(
    frame: pd.DataFrame,
    time: pd.Series | None,
    categorical: Sequence[str],
    source: str,
    null_tolerance: float = NULL_TOLERANCE,
    category_tolerance: float = CATEGORY_TOLERANCE,
) -> list[dict[str, Any]]:
    """GX expectations for every column of ``frame``; ``time`` (UTC instants) splits it into weeks."""
    week = None if time is None else (time - pd.Timestamp("1970-01-05", tz="UTC")).dt.days.to_numpy() // 7
    out: list[dict[str, Any]] = []
    for col in frame.columns:
        present = frame[col].notna()
        lowest = float(present.mean())
        if week is not None:
            by_week = present.groupby(week).agg(["mean", "size"])
            by_week = by_week[by_week["size"] >= MIN_WEEK_ROWS]
            # A low quantile, not the minimum: the data's first and last weeks are partial (rolling
            # features still filling, a feed ending mid-week) and would set the floor alone.
            lowest = float(by_week["mean"].quantile(WEEK_QUANTILE)) if len(by_week) else lowest
        floor = round(lowest - null_tolerance, 4)
        if floor > 0:
            out.append(
                {
                    "type": "expect_column_proportion_of_non_null_values_to_be_between",
                    "kwargs": {"column": col, "min_value": floor},
                    "meta": {
                        "why": f"learned: present in >= {lowest:.1%} of rows in 95% of the weeks of {source}, "
                        f"less {null_tolerance:.0%}"
                    },
                }
            )
        values = pd.unique(frame[col].dropna())
        if col in categorical and 0 < len(values) <= MAX_CATEGORIES:
            out.append(
                {
                    "type": "expect_column_values_to_be_in_set",
                    "kwargs": {
                        "column": col,
                        "value_set": sorted(v.item() if hasattr(v, "item") else v for v in values),
                        "mostly": round(1 - category_tolerance, 6),
                    },
                    "meta": {
                        "why": f"learned: the {len(values)} values seen in {source}; up to "
                        f"{category_tolerance:.0%} of a batch may be new"
                    },
                }
            )
    return out


def learn_suites(
    cfg: EvergreenConfig,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    null_tolerance: float = NULL_TOLERANCE,
    category_tolerance: float = CATEGORY_TOLERANCE,
) -> dict[str, dict[str, Any]]:
    """A learned suite per raw table and for the training frame, from the reference [start, end)
    (default: all the data). The frame's features come from the Feast store the features flow built."""
    from evergreen.feature_store import feature_names, features_for

    spec = cfg.problem
    problem = load_problem(cfg)
    raw = problem.load_tables(cfg.data.source)
    prepared = prepare_checked(cfg, raw)
    t = prepared[spec.prediction_time]
    start = t.min() if start is None else start
    end = t.max() + pd.Timedelta(seconds=1) if end is None else end
    source = f"{start:%Y-%m-%d} .. {end:%Y-%m-%d}"
    batch = problem.raw_batch(raw, start - spec.lookback, end)
    suites = {}
    for name, table in spec.tables.items():
        frame = batch[name][table.columns]
        time = as_utc(frame[table.time_column], spec.time_zone) if table.time_column else None
        expectations = learn_expectations(frame, time, spec.categorical, source, null_tolerance, category_tolerance)
        suites[name] = {"name": name, "expectations": expectations}
    frame = features_for(cfg, prepared, start, end)
    columns = model_columns(spec.request_features, feature_names(cfg))
    expectations = learn_expectations(
        frame[columns], frame[EVENT_TIMESTAMP], spec.categorical, source, null_tolerance, category_tolerance
    )
    suites["training_frame"] = {"name": "training_frame", "expectations": expectations}
    return suites


def write_suites(suites: dict[str, dict[str, Any]], suites_dir: Path) -> list[Path]:
    folder = suites_dir / LEARNED
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, suite in suites.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(suite, indent=1) + "\n")
        paths.append(path)
    return paths
