"""Features flow: raw data -> validated -> offline feature tables -> feast apply -> online backfill.

``python -m flows.features`` or the ``features`` deployment (scheduled materialisation).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pandas as pd
from prefect import flow

from evergreen.config import DEFAULT_CONFIG, load_config
from flows.shell import run_flow
from tasks.common import flow_run_id, stage, table_artifact
from tasks.data import load_raw_data, prepare
from tasks.features import apply_repo, build_tables, materialize
from tasks.validation import validate_batch


@flow(name="features", log_prints=True)
def features(config: str = DEFAULT_CONFIG, materialize_online: bool = True) -> dict[str, Any]:
    """Rebuild the offline feature tables from raw data, apply the Feast repo, backfill online."""
    cfg = load_config(config)
    timings: dict[str, float] = {}
    with stage(timings, "load"):
        raw = load_raw_data(cfg)
    with stage(timings, "validate_raw"):
        validate_batch(
            raw.tables,
            cfg.suites_dir,
            cfg.reports_dir / "validation" / (flow_run_id() or "local"),
            "Raw data (features flow)",
        )
    with stage(timings, "build"):
        prepared = prepare(cfg, raw)
        rows = build_tables(cfg, raw, prepared)
    with stage(timings, "feast_apply"):
        views = apply_repo(cfg)
    if materialize_online:
        with stage(timings, "materialize"):
            # Backfill the whole history in one explicit range (static views may be stamped long before).
            start = pd.Timestamp("1970-01-02", tz="UTC")
            end = prepared[cfg.problem.known_at].max().ceil("D") + pd.Timedelta(days=1)
            materialize(cfg, start, end)
    table_artifact(
        [{"stage": k, "seconds": v} for k, v in timings.items()],
        "features-stage-timings",
        "Wall time of each features stage",
    )
    print(f"features ready: {rows} -> views {views}")
    return {"rows": rows, "views": views, "feature_dir": str(cfg.features_dir), "timings": timings}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.features", description=features.__doc__)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--no-materialize", action="store_true", help="skip the online-store backfill")
    args = p.parse_args(argv)

    return run_flow(
        lambda: features(config=args.config, materialize_online=not args.no_materialize),
        lambda s: json.dumps(s, indent=1, default=str),
    )


if __name__ == "__main__":
    sys.exit(main())
