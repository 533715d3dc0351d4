"""Training flow: load → validate → retrieve → tune → train → log → gate → register (→ roll out).

Run it from a shell (``python -m flows.training --as-of 2013-06-01``) or as the ``training``
deployment. ``as_of`` replays history: only what was known at that instant is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import PositiveInt

from evergreen import feature_store, registry, tracking
from evergreen.config import DEFAULT_CONFIG, load_config, parse_as_of
from evergreen.features import latest_outcome
from evergreen.training import plan_windows
from flows.rollout import rollout
from flows.shell import run_flow
from tasks.common import flow_run_id, one_at_a_time, stage, table_artifact
from tasks.data import cut_batch, load_raw_data, prepare
from tasks.gate import gate_challenger
from tasks.registry import register_and_promote
from tasks.training import log_run, retrieve_training_set, train_model, tune_model
from tasks.validation import validate_batch

Reason = Literal["manual", "schedule", "drift"]
REASONS: tuple[Reason, ...] = ("manual", "schedule", "drift")


@flow(name="training", log_prints=True)
def training(
    config: str | None = DEFAULT_CONFIG,
    as_of: datetime | None = None,
    n_trials: PositiveInt | None = None,
    reason: Reason = "manual",
) -> dict[str, Any]:
    """Train a challenger on data known at ``as_of``, gate it against the champion, register it.
    ``config`` None (an alert that names none) is the worker's default config."""
    started = time.perf_counter()
    logger = get_run_logger()
    config = config or DEFAULT_CONFIG
    # The Feast snapshot is read once: a features run publishing meanwhile cannot mix two in this run.
    cfg = feature_store.pinned(load_config(config))
    registry.check_tracking(cfg.tracking_uri)  # before the work, not after it
    run = flow_run_id()
    report_dir = cfg.reports_dir / "validation" / (run or "local")
    timings: dict[str, float] = {}

    with stage(timings, "load"):
        raw = load_raw_data(cfg)
        prepared = prepare(cfg, raw)
        windows = plan_windows(parse_as_of(as_of, latest_outcome(prepared, cfg.problem)), cfg.window)

    with stage(timings, "validate"):  # nothing below runs on a batch that breaks its contract
        batch, lo, hi = cut_batch(cfg, raw, windows)
        raw_check = validate_batch(batch, cfg.suites_dir, report_dir, f"Raw batch {lo:%Y-%m-%d} .. {hi:%Y-%m-%d}")

    with stage(timings, "retrieve"):  # point-in-time, through Feast; the assembled frame has its own contract
        data = retrieve_training_set(cfg, prepared, windows)
        frame_check = validate_batch(
            {"training_frame": data.frame}, cfg.suites_dir, report_dir, "Assembled training frame"
        )
    logger.info("training rows %d, holdout rows %d, %d features", len(data.train), len(data.holdout), len(data.columns))

    with stage(timings, "tune"):
        tuning, study = tune_model(cfg, data, n_trials)

    with stage(timings, "train"):
        model = train_model(cfg, data, tuning)

    with stage(timings, "log"):
        lineage = tracking.lineage_tags(cfg, windows, data.fingerprint, raw.fingerprint(), reason, run or "")
        reports = [r.report_path for r in [*raw_check, *frame_check] if r.report_path]
        logged = log_run(cfg, data, model, tuning, study, lineage, reports)

    # Gate and promotion are one step per model across runs and deployments: a run that waited here
    # gates against the champion the run before it promoted, never against the one both started with.
    with one_at_a_time(f"evergreen-promote-{cfg.registry.model_name}"):
        with stage(timings, "gate"):
            decision, decision_path = gate_challenger(cfg, data, logged.holdout_scores, logged.run_id)

        # With rollout enabled, a passing challenger reaches traffic through the canary rollout instead.
        hand_off = decision.passed and cfg.rollout.enabled and decision.champion_version is not None
        with stage(timings, "register"):
            outcome = register_and_promote(cfg, data, logged, decision, lineage, reason, run, promote=not hand_off)

        rollout_summary = None
        if hand_off:
            with stage(timings, "rollout"):
                rollout_summary = roll_out(config, outcome.version, reason)
                outcome.champion = rollout_summary["champion"]
            print(f"rollout {rollout_summary['status']}: {'; '.join(rollout_summary['reasons'])}")

    tracking.log_metrics(cfg.tracking_uri, logged.run_id, {f"stage_seconds.{k}": v for k, v in timings.items()})
    table_artifact([{"stage": k, "seconds": v} for k, v in timings.items()], "training-stage-timings", "Stage times")
    print(f"gate {decision.verdict}: version {outcome.version}, champion is v{outcome.champion}")
    return {
        "as_of": windows.end.isoformat(),
        "model_name": cfg.registry.model_name,
        "version": outcome.version,
        "champion": outcome.champion,
        "previous_champion": outcome.previous_champion,
        "gate": decision.verdict,
        "gate_reasons": decision.reasons,
        "holdout": decision.challenger,
        "mlflow_run_id": logged.run_id,
        "decision_record": str(decision_path),
        "train_rows": len(data.train),
        "holdout_rows": len(data.holdout),
        "tuning_trials": tuning.n_trials,
        "tuning": tuning.summary(cfg.tuning.timeout_seconds),
        "tuning_stopped_at_time_budget": tuning.stopped_at_time_budget,
        "tuning_search_seconds": tuning.search_seconds,
        "tuning_search_cpu_seconds": tuning.search_cpu_seconds,
        "rollout": rollout_summary,
        "timings": timings,
        "flow_seconds": round(time.perf_counter() - started, 3),
    }


def roll_out(config: str, version: str, reason: Reason) -> dict[str, Any]:
    """The rollout flow as a subflow; its failure (a rollback) is reported, not re-raised: the
    training run did its job, and the rollout's own run shows as failed with its decision record."""
    state = rollout(config=config, version=int(version), reason=f"gate passed ({reason})", return_state=True)
    cfg = load_config(config)
    champion = registry.alias_version(registry.client(cfg.tracking_uri), cfg.registry.model_name, registry.CHAMPION)
    if state.is_completed():
        rec = state.result()
        return {"status": rec["status"], "champion": champion, "reasons": rec["reasons"]}
    error = state.result(raise_on_failure=False)
    return {
        "status": "rolled-back" if state.is_failed() else state.type.value,
        "champion": champion,
        "reasons": [str(error)],
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.training", description=training.__doc__)
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config YAML (default: configs/default.yaml)")
    p.add_argument(
        "--as-of",
        type=datetime.fromisoformat,
        default=None,
        help="train only on what was known then, e.g. 2013-06-01 (default: end of data)",
    )
    p.add_argument("--n-trials", type=int, default=None, help="override tuning.n_trials")
    p.add_argument("--reason", choices=REASONS, default="manual", help="why this run happens (recorded on the model)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_flow(
        lambda: training(config=args.config, as_of=args.as_of, n_trials=args.n_trials, reason=args.reason),
        lambda s: json.dumps(s, indent=1, default=str),
    )


if __name__ == "__main__":
    sys.exit(main())
