"""Replay flow: walk history week by week and measure what continuous training buys.

Three strategies, each with its own registered model, all on the same features, windows, trial
budget and the real training and drift flows (``as_of`` = the instant each decision was made):

  static          trained once on the first window, never again
  always-retrain  retrains every week and promotes without a gate
  evergreen       runs the drift flow every week; on drift (or while it has no champion yet),
                  the training flow and its gate decide

Each week [t, t + 7 d) is scored with the champion each strategy had at t (features from Feast's
point-in-time join, labels = the problem's outcomes); then every strategy acts as of t + 7 d.
Writes a weekly table and a summary (CSV, JSON), a PNG, and Prefect artifacts.

  python -m flows.replay                                  # two months into the data, to its end
  python -m flows.replay --start 2013-06-01 --weeks 3 --n-trials 2
  python -m flows.replay --config examples/<name>/config.yaml --weeks 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow
from pydantic import PositiveInt

from evergreen import feature_store
from evergreen.config import EvergreenConfig, load_config
from evergreen.registry import Champion
from evergreen.replay import (
    ALWAYS,
    EVERGREEN,
    STATIC,
    STRATEGIES,
    Strategy,
    Week,
    check_target,
    plan_weeks,
    summarize,
    summary_markdown,
    target_markdown,
    utc,
    week_metrics,
    write_strategy_configs,
)
from flows.drift import drift
from flows.features import features
from flows.shell import run_flow
from flows.training import Reason, training
from tasks.common import flow_run_id
from tasks.data import load_raw_data, prepare
from tasks.drift import load_champion, score_current
from tasks.features import retrieve
from tasks.replay import Progress, champion_version, promote_without_gate, publish, save_outputs

ROOT = Path(__file__).resolve().parent.parent
REPLAY_CONFIG = str(ROOT / "configs" / "replay.yaml")
HISTORY_BEFORE_START = pd.Timedelta(days=59)  # default start: two months after the first request


def no_action() -> dict[str, Any]:
    return {
        "drift": "",
        "drift_reasons": "",
        "retrained": False,
        "gate": "",
        "gate_failed": "",
        "promoted": False,
        "new_version": "",
        "seconds": 0.0,
        "error": "",
    }


def _train(config: str, as_of: pd.Timestamp, n_trials: int | None, reason: Reason) -> dict[str, Any]:
    return training(config=config, as_of=as_of.to_pydatetime(), n_trials=n_trials, reason=reason)


def _failed_rules(out: dict[str, Any]) -> str:
    """The gate rules a challenger failed, e.g. ``improvement:roc_auc, no-regression:slices``."""
    return ", ".join(r.removeprefix("FAIL ").split(": ", 1)[0] for r in out["gate_reasons"] if r.startswith("FAIL "))


def act(
    strategy: str, config: str, cfg: EvergreenConfig, as_of: pd.Timestamp, n_trials: int | None, run_id: str
) -> dict[str, Any]:
    """One strategy's move as of ``as_of``, through the real flows; returns what it did."""
    action = no_action()
    t0 = time.perf_counter()
    try:
        if strategy == ALWAYS:
            out = _train(config, as_of, n_trials, "schedule")
            action.update(retrained=True, gate=out["gate"], gate_failed=_failed_rules(out), new_version=out["version"])
            if out["champion"] != out["version"]:
                reason = f"replay {run_id}: always-retrain promotes without a gate"
                promote_without_gate(cfg, out["version"], reason, flow_run_id())
            action["promoted"] = True
        elif strategy == EVERGREEN:
            d = drift(config=config, as_of=as_of.to_pydatetime())
            action.update(drift=d["status"], drift_reasons=" | ".join(d["reasons"])[:500])
            if d["status"] in ("drift", "no-champion"):  # no champion yet: the cold-start rule gets another go
                out = _train(config, as_of, n_trials, "drift" if d["status"] == "drift" else "schedule")
                action.update(
                    retrained=True,
                    gate=out["gate"],
                    gate_failed=_failed_rules(out),
                    new_version=out["version"],
                    promoted=out["champion"] == out["version"],
                )
    except Exception as e:  # recorded in the table; the strategy keeps the champion it had
        action["error"] = f"{type(e).__name__}: {e}"[:300]
    action["seconds"] = round(time.perf_counter() - t0, 2)
    return action


def describe(strategy: str, a: dict[str, Any]) -> str:
    if a["error"]:
        return f"ERROR {a['error']}"
    if strategy == STATIC:
        return "keeps its model"
    parts = [f"drift flow: {a['drift']}"] if a["drift"] else []
    if a["retrained"]:
        parts.append(f"v{a['new_version']} gate {a['gate']}, {'promoted' if a['promoted'] else 'not promoted'}")
    return "; ".join(parts) + f" ({a['seconds']:.0f} s)"


def current_champion(cfg: EvergreenConfig, loaded: Champion | None) -> Champion | None:
    """The strategy's champion now; the model is loaded again only when the alias moved."""
    version = champion_version(cfg)
    if version is None:
        return None
    if loaded is not None and loaded.version == version:
        return loaded
    return load_champion(cfg)


@flow(name="replay", log_prints=True)
def replay(
    config: str = REPLAY_CONFIG,
    start: str | None = None,
    weeks: PositiveInt | None = None,
    n_trials: PositiveInt | None = None,
    output: str | None = None,
    plot: str | None = None,
    stem: str = "replay",
    rebuild_features: bool = False,
    strategies: list[Strategy] | None = None,
) -> dict[str, Any]:
    """Replay history week by week from ``start`` (default: two months into the data; at most ``weeks``
    weeks) for each strategy."""
    chosen = [s for s in STRATEGIES if s in (strategies or STRATEGIES)]
    cfg = load_config(config)
    run_id = pd.Timestamp.now(tz="UTC").strftime("%Y%m%d%H%M%S")
    out_dir = Path(output) if output else cfg.reports_dir / "replay" / run_id

    # ── 1. Features, one config per strategy, the week plan ────────────────────────────────────
    if rebuild_features or feature_store.published_snapshot(cfg) is None:
        print(f"building features under {cfg.feast_root}")
        features(config=config)
    written = write_strategy_configs(cfg, run_id, cfg.home / "replay-configs" / run_id)
    configs = {s: str(written[s]) for s in chosen}
    cfgs = {s: load_config(p) for s, p in configs.items()}
    prepared = prepare(cfg, load_raw_data(cfg))
    times = prepared[cfg.problem.prediction_time]
    first = start if start is not None else (times.min() + HISTORY_BEFORE_START).floor("D")
    plan: list[Week] = plan_weeks(first, times.max(), weeks)
    n = len(plan)
    budget = n_trials if n_trials is not None else cfg.tuning.n_trials
    print(
        f"replay {run_id}: {n} weeks from {plan[0].start:%Y-%m-%d} to {plan[-1].end:%Y-%m-%d}, {budget} trials "
        f"per training; models {', '.join(c.registry.model_name for c in cfgs.values())}"
    )
    progress = Progress(f"replay-progress-{run_id}", len(chosen) * (n + 1))

    # ── 2. Initial fit: every strategy starts from its own model trained as of the start ──────
    initial: dict[str, float] = {}
    for s in chosen:
        print(f"initial fit as of {plan[0].start:%Y-%m-%d}: {s}")
        progress.step(f"initial fit as of {plan[0].start:%Y-%m-%d}: {s}", advance=0)
        t0 = time.perf_counter()
        out = _train(configs[s], plan[0].start, n_trials, "manual")
        if out["champion"] is None and s != EVERGREEN:  # they serve whatever they trained; Evergreen's gate rules
            promote_without_gate(cfgs[s], out["version"], f"replay {run_id}: {s} starts with its first model", None)
        initial[s] = round(time.perf_counter() - t0, 2)
        progress.step(f"initial fit done: {s}")

    # ── 3. Walk the weeks: score with the champion at the week's start, then act at its end ───
    rows: list[dict[str, Any]] = []
    loaded: dict[str, Champion | None] = {}
    for week in plan:
        frame = retrieve(cfg, prepared, week.start, week.end)  # what serving saw: point-in-time features
        y = frame[cfg.problem.label].to_numpy()
        last = week.number == n
        for s in chosen:
            tag = f"week {week.number}/{n} ({week.start:%Y-%m-%d}) {s}"
            progress.step(f"{tag}: scoring", advance=0)
            champion = loaded[s] = current_champion(cfgs[s], loaded.get(s))
            scored = week_metrics(y, score_current(champion, frame) if champion is not None else None)
            if not last and s != STATIC:
                progress.step(f"{tag}: acting as of {week.end:%Y-%m-%d}", advance=0)
            action = no_action() if last else act(s, configs[s], cfgs[s], week.end, n_trials, run_id)
            rows.append(
                {
                    "week": week.number,
                    "start": week.start.isoformat(),
                    "end": week.end.isoformat(),
                    "strategy": s,
                    "version": champion.version if champion else "",
                    **scored,
                    **action,
                }
            )
            auc = "-" if pd.isna(scored["roc_auc"]) else f"{scored['roc_auc']:.4f}"
            version = champion.version if champion else "-"
            print(f"{tag}: AUC {auc} with v{version}" + ("" if last else f"; {describe(s, action)}"))
            progress.step(f"{tag}: done")

    # ── 4. Summary, files, artifacts ────────────────────────────────────────────────────────────
    summary = summarize(rows, initial)
    target = check_target(summary)
    settings = {
        "run_id": run_id,
        "title": f"Replay {plan[0].start:%Y-%m-%d} .. {plan[-1].end:%Y-%m-%d}: realised weekly ROC AUC of the model "
        f"in production ({budget} trials per training)",
        "start": plan[0].start.isoformat(),
        "end": plan[-1].end.isoformat(),
        "weeks": n,
        "n_trials": budget,
        "strategies": chosen,
        "config": str(cfg.source_file),
        "config_digest": cfg.digest,
        "window": cfg.window.model_dump(),
        "tuning": cfg.tuning.model_dump(),
        "gate": cfg.gate.model_dump(),
        "drift": cfg.drift.model_dump(),
        "models": {s: c.registry.model_name for s, c in cfgs.items()},
        "strategy_configs": configs,
        "tracking_uri": cfg.tracking_uri,
    }
    paths = save_outputs(rows, summary, target, settings, out_dir, stem, Path(plot) if plot else None)
    publish(rows, summary, target, paths)
    return {
        "run_id": run_id,
        "settings": settings,
        "summary": summary,
        "target": target,
        "weeks": rows,
        "paths": {k: str(v) for k, v in paths.items()},
    }


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    return "\n".join(
        [
            "",
            "=" * 78,
            f"Replay {s['start'][:10]} .. {s['end'][:10]}: {s['weeks']} weeks, {s['n_trials']} trials per training",
            "=" * 78,
            summary_markdown(result["summary"]),
            "",
            target_markdown(result["target"]),
            "",
            *(f"{k}: {v}" for k, v in result["paths"].items()),
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=REPLAY_CONFIG, help="base config (default: configs/replay.yaml)")
    p.add_argument(
        "--start", default=None, help="the first scored week starts here (default: two months into the data)"
    )
    p.add_argument("--weeks", type=int, default=None, help="replay at most this many weeks (default: to the end)")
    p.add_argument("--n-trials", type=int, default=None, help="trial budget per training (default: tuning.n_trials)")
    p.add_argument("--output", default=None, help="folder for the files (default: <home>/reports/replay/<run>)")
    p.add_argument("--plot", default=None, help="PNG path (default: <output>/<stem>.png)")
    p.add_argument("--stem", default="replay", help="file name stem of the outputs (default: replay)")
    p.add_argument("--strategy", action="append", choices=STRATEGIES, help="only this strategy (repeatable)")
    p.add_argument("--rebuild-features", action="store_true", help="run the features flow even if features exist")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.start is not None:
            utc(args.start)  # a bad date fails here, before any flow starts
    except ValueError:
        parser.error(f"--start: not a date: {args.start!r} (e.g. 2013-03-01)")

    return run_flow(
        lambda: replay(
            config=args.config,
            start=args.start,
            weeks=args.weeks,
            n_trials=args.n_trials,
            output=args.output,
            plot=args.plot,
            stem=args.stem,
            rebuild_features=args.rebuild_features,
            strategies=args.strategy,
        ),
        render,
    )


if __name__ == "__main__":
    sys.exit(main())
