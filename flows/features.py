"""Features flow: raw data -> validated -> a new Feast snapshot built aside -> its training frame
validated -> published in one step.

``python -m flows.features`` or the ``features`` deployment (scheduled materialisation). Each run
rebuilds the whole Feast state from the raw data (offline tables, registry, online store) in a new
snapshot folder; readers (training runs, the gateway) keep the published snapshot until the new one
has passed every contract and is swapped in whole. A run that fails anywhere publishes nothing. An
entity absent from the raw data is absent from the new snapshot: its online features are gone.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pandas as pd
from prefect import flow

from evergreen import feature_store
from evergreen.config import DEFAULT_CONFIG, load_config
from evergreen.features import latest_outcome
from evergreen.training import plan_windows
from flows.shell import run_flow
from tasks.common import flow_run_id, stage, table_artifact
from tasks.data import load_raw_data, prepare
from tasks.features import apply_repo, build_tables, materialize, publish, retrieve
from tasks.validation import validate_batch


@flow(name="features", log_prints=True)
def features(config: str = DEFAULT_CONFIG, materialize_online: bool = True) -> dict[str, Any]:
    """Rebuild the Feast state from raw data in a new snapshot; publish it once it passes its contracts."""
    cfg = load_config(config)
    report_dir = cfg.reports_dir / "validation" / (flow_run_id() or "local")
    timings: dict[str, float] = {}
    with stage(timings, "load"):
        raw = load_raw_data(cfg)
    with stage(timings, "validate_raw"):
        validate_batch(raw.tables, cfg.suites_dir, report_dir, "Raw data (features flow)")
    staged = feature_store.stage_snapshot(cfg)
    try:
        with stage(timings, "build"):
            prepared = prepare(cfg, raw)
            rows = build_tables(staged, raw, prepared)
        with stage(timings, "feast_apply"):
            views = apply_repo(staged)
        with stage(timings, "validate_frame"):  # the frame the next training run would get
            windows = plan_windows(latest_outcome(prepared, cfg.problem), cfg.window)
            frame = retrieve(staged, prepared, windows.start, windows.end)
            validate_batch({"training_frame": frame}, cfg.suites_dir, report_dir, "Latest training frame")
        if materialize_online:
            with stage(timings, "materialize"):
                # Backfill the whole history in one explicit range (static views may be stamped long before).
                start = pd.Timestamp("1970-01-02", tz="UTC")
                end = prepared[cfg.problem.known_at].max().ceil("D") + pd.Timedelta(days=1)
                materialize(staged, start, end)
        with stage(timings, "publish"):
            snapshot = publish(staged)
    except BaseException:
        feature_store.discard_snapshot(staged)
        raise
    table_artifact(
        [{"stage": k, "seconds": v} for k, v in timings.items()],
        "features-stage-timings",
        "Wall time of each features stage",
    )
    print(f"features published: {rows} -> views {views} in {snapshot}")
    return {
        "rows": rows,
        "views": views,
        "snapshot": str(snapshot),
        "feature_dir": staged.features_dir,
        "timings": timings,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.features", description=features.__doc__)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--no-materialize", action="store_true", help="publish without an online store (offline use only)")
    args = p.parse_args(argv)

    return run_flow(
        lambda: features(config=args.config, materialize_online=not args.no_materialize),
        lambda s: json.dumps(s, indent=1, default=str),
    )


if __name__ == "__main__":
    sys.exit(main())
