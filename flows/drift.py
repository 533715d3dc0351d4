"""Drift flow: current window vs the champion's own training reference; on real drift, an event.

``python -m flows.drift --as-of 2013-12-08`` or the scheduled ``drift`` deployment. The event
``evergreen.drift.detected`` starts the ``retrain-on-drift`` deployment (see prefect.yaml).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from evergreen.config import load_config
from flows.training import DEFAULT_CONFIG, parse_as_of
from tasks.common import flow_run_id, stage
from tasks.data import load_raw_data, prepare
from tasks.drift import (
    DRIFT_EVENT,
    decide_drift,
    last_retrain_as_of,
    load_champion,
    model_resource_id,
    publish,
    render_report,
    score_current,
)


@flow(name="drift", log_prints=True)
def drift(config: str = DEFAULT_CONFIG, as_of: str | None = None, lookback_days: float | None = None) -> dict[str, Any]:
    """Compare the last ``lookback_days`` before ``as_of`` with the champion's training reference."""
    logger = get_run_logger()
    cfg = load_config(config)
    lookback = float(lookback_days) if lookback_days not in (None, "", "None") else cfg.drift.lookback_days
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"model_name": cfg.registry.model_name, "event": None}

    with stage(timings, "reference"):
        champion = load_champion(cfg)
    if champion is None:
        summary.update(
            status="no-champion", reasons=["no champion yet: nothing to compare; run the training flow first"]
        )
        publish(summary, [], None)
        print(summary["reasons"][0])
        return summary

    with stage(timings, "current"):
        raw = load_raw_data(cfg)
        flights = prepare(cfg, raw)
        end = parse_as_of(as_of, flights)
        start = end - pd.Timedelta(days=lookback)
        window = {"start": start.isoformat(), "end": end.isoformat()}
        summary.update(as_of=end.isoformat(), window=window, champion_version=champion.version)
        from evergreen.features import entity_frame

        entities = entity_frame(flights, start, end)
        summary["rows"] = len(entities)
        if len(entities) < cfg.drift.min_rows:
            summary.update(
                status="no-data",
                reasons=[
                    f"the window {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} holds {len(entities)} flights, fewer "
                    f"than drift.min_rows={cfg.drift.min_rows}: no decision, no event"
                ],
            )
            publish(summary, [], None)
            print(summary["reasons"][0])
            return summary
        from tasks.features import retrieve

        current = retrieve(cfg, flights, start, end)

    with stage(timings, "decide"):
        scores = score_current(champion, current)
        result = decide_drift(cfg, champion, current, scores)
    with stage(timings, "report"):
        html = cfg.reports_dir / "drift" / f"drift-{end:%Y%m%dT%H%M}-{(flow_run_id() or 'local')[:8]}.html"
        render_report(cfg, champion, current, html)

    reasons = list(result.reasons)
    status = "drift" if result.drifted else "calm"
    last = last_retrain_as_of(cfg)
    if result.drifted and last is not None and end - last < pd.Timedelta(days=cfg.drift.cooldown_days):
        status = "cooldown"
        reasons.append(
            f"last retrain as of {last:%Y-%m-%d} is within the {cfg.drift.cooldown_days:g}-day cooldown: no event"
        )
    summary.update(
        status=status,
        reasons=reasons,
        severity=result.severity,
        drifted_features=result.drifted_features,
        report=str(html),
        timings=timings,
    )
    if status == "drift":
        from prefect.events import emit_event

        payload = {
            "as_of": end.isoformat(),
            "window_start": window["start"],
            "window_end": window["end"],
            "drifted_features": result.drifted_features,
            "severity": result.severity,
            "champion_version": champion.version,
            "reasons": reasons,
            "report": str(html),
        }
        event = emit_event(
            DRIFT_EVENT,
            resource={
                "prefect.resource.id": model_resource_id(cfg.registry.model_name),
                "prefect.resource.name": cfg.registry.model_name,
            },
            payload=payload,
        )
        summary["event"] = str(event.id) if event else None
        logger.warning("drift detected (severity %.2f): %s", result.severity, "; ".join(reasons))
    else:
        logger.info("no retraining: %s", "; ".join(reasons) or "no feature drifted")
    publish(summary, result.table, html)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.drift", description=drift.__doc__)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--as-of", default=None, help="end of the current window, e.g. 2013-12-08 (default: end of data)")
    p.add_argument("--lookback-days", type=float, default=None, help="override drift.lookback_days")
    args = p.parse_args(argv)
    from flows.cli import run_flow

    return run_flow(
        lambda: drift(config=args.config, as_of=args.as_of, lookback_days=args.lookback_days),
        lambda s: json.dumps(s, indent=1, default=str),
    )


if __name__ == "__main__":
    from flows.cli import exit_now

    exit_now(main())
