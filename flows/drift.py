"""Drift flow: current window vs the champion's own training reference; on real drift, an event.

``python -m flows.drift --as-of 2013-12-08`` or the scheduled ``drift`` deployment. The event
``evergreen.drift.detected`` starts the ``retrain-on-drift`` deployment (see prefect.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from pydantic import PositiveFloat

from evergreen import feature_store, registry
from evergreen.config import DEFAULT_CONFIG, load_config, parse_as_of
from evergreen.drift import in_cooldown
from evergreen.features import entity_frame, latest_outcome
from flows.shell import run_flow
from tasks.common import flow_run_id, stage
from tasks.data import load_raw_data, prepare
from tasks.drift import (
    decide_drift,
    emit_drift_event,
    last_retrain_as_of,
    load_champion,
    load_reference,
    log_check,
    publish,
    render_report,
    score_current,
)
from tasks.features import retrieve


@flow(name="drift", log_prints=True)
def drift(
    config: str = DEFAULT_CONFIG, as_of: datetime | None = None, lookback_days: PositiveFloat | None = None
) -> dict[str, Any]:
    """Compare the last ``lookback_days`` before ``as_of`` with the champion's training reference."""
    logger = get_run_logger()
    # The Feast snapshot is read once: a features run publishing meanwhile cannot mix two in this run.
    cfg = feature_store.pinned(load_config(config))
    registry.check_tracking(cfg.tracking_uri)  # before the work, not after it
    lookback = lookback_days or cfg.drift.lookback_days
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"model_name": cfg.registry.model_name, "event": None}

    with stage(timings, "reference"):
        champion = load_champion(cfg)
        if champion is None:
            return no_decision(
                summary, "no-champion", "no champion yet: nothing to compare; run the training flow first"
            )
        reference = load_reference(cfg, champion)

    with stage(timings, "current"):
        prepared = prepare(cfg, load_raw_data(cfg))
        end = parse_as_of(as_of, latest_outcome(prepared, cfg.problem))
        start = end - pd.Timedelta(days=lookback)
        window = {"start": start.isoformat(), "end": end.isoformat()}
        summary.update(as_of=end.isoformat(), window=window, champion_version=champion.version)
        summary["rows"] = rows = len(entity_frame(prepared, cfg.problem, start, end))
        if rows < cfg.drift.min_rows:
            return no_decision(
                summary,
                "no-data",
                f"the window {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} holds {rows} rows, fewer "
                f"than drift.min_rows={cfg.drift.min_rows}: no decision, no event",
            )
        current = retrieve(cfg, prepared, start, end)

    with stage(timings, "decide"):
        scores = score_current(champion, current)
        result = decide_drift(cfg, champion, reference, current, scores)
    with stage(timings, "report"):
        html = cfg.reports_dir / "drift" / f"drift-{end:%Y%m%dT%H%M}-{(flow_run_id() or 'local')[:8]}.html"
        report = render_report(cfg, champion, reference, current, scores, result, html)

    reasons = list(result.reasons)
    status = "drift" if result.drifted else "calm"
    last = last_retrain_as_of(cfg)
    if result.drifted and in_cooldown(end, last, cfg.drift.cooldown_days):
        status = "cooldown"
        reasons.append(
            f"last retrain as of {last:%Y-%m-%d} is within the {cfg.drift.cooldown_days:g}-day cooldown: no event"
        )
    summary.update(
        status=status,
        reasons=reasons,
        severity=result.severity,
        drifted_features=result.drifted_features,
        drifted_count=result.drifted_count,
        feature_count=result.feature_count,
        drifted_share=result.drifted_share,
        report=str(html),
        evidently=report.as_dict(),  # what the report states, and which count decides
    )
    if status == "drift" and cfg.drift.emit_event:
        event = emit_drift_event(
            cfg,
            {
                "as_of": end.isoformat(),
                "window_start": window["start"],
                "window_end": window["end"],
                "drifted_features": result.drifted_features,
                "drifted_share": result.drifted_share,
                "severity": result.severity,
                "champion_version": champion.version,
                "reasons": reasons,
                "report": str(html),
                "config": str(cfg.source_file),
            },
        )
        summary["event"] = str(event.id) if event else None
        logger.warning("drift detected (severity %.2f): %s", result.severity, "; ".join(reasons))
    else:
        logger.info("no retraining: %s", "; ".join(reasons) or "no feature drifted")
    with stage(timings, "record"):  # the decision record and the report, in MLflow
        summary["mlflow"] = log_check(cfg, summary, result, report)
    summary["timings"] = timings
    publish(summary, result.table)
    return summary


def no_decision(summary: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
    """A documented no-op: the summary and its artifact say why no decision was made."""
    summary.update(status=status, reasons=[reason])
    publish(summary, [])
    print(reason)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.drift", description=drift.__doc__)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument(
        "--as-of",
        type=datetime.fromisoformat,
        default=None,
        help="end of the current window, e.g. 2013-12-08 (default: end of data)",
    )
    p.add_argument("--lookback-days", type=float, default=None, help="override drift.lookback_days")
    args = p.parse_args(argv)

    return run_flow(
        lambda: drift(config=args.config, as_of=args.as_of, lookback_days=args.lookback_days),
        lambda s: json.dumps(s, indent=1, default=str),
    )


if __name__ == "__main__":
    sys.exit(main())
