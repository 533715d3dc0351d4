"""Training flow: validate -> retrieve -> tune -> train -> gate -> register and promote.

Run it from a shell (``python -m flows.training --as-of 2013-06-01``) or as the ``training``
deployment. ``as_of`` replays history: only what was known at that instant is used.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from evergreen.config import load_config
from evergreen.features import model_columns
from evergreen.gcpolicy import HeldCollector, hold_collector
from evergreen.training import plan_windows, raw_batch, split_frame
from evergreen.validation import ValidatorProcess
from tasks.common import flow_run_id, prewarm, stage, table_artifact
from tasks.data import load_raw_data, prepare
from tasks.gate import run_gate, score_champion
from tasks.registry import register_and_promote
from tasks.training import log_run, train_model, tune_model
from tasks.validation import validate_batch

REASONS = ("manual", "schedule", "drift")
# The environment picks the config (e.g. a worker started with EVERGREEN_CONFIG=configs/prod.yaml).
DEFAULT_CONFIG = os.environ.get("EVERGREEN_CONFIG") or str(
    Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
)


def parse_as_of(value: str | None, flights: pd.DataFrame) -> pd.Timestamp:
    """``as_of`` as a UTC instant; default: the moment after the last outcome in the data."""
    if value in (None, "", "None", "latest"):
        return flights["known_at"].max().ceil("D")
    ts = pd.Timestamp(str(value))
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@flow(name="training", log_prints=True)
def training(
    config: str = DEFAULT_CONFIG,
    as_of: str | None = None,
    n_trials: int | None = None,
    reason: str = "manual",
) -> dict[str, Any]:
    """Train a challenger on data known at ``as_of``, gate it against the champion, register it."""
    # The collector waits while the run imports its libraries and loads its data (see evergreen.gcpolicy).
    with hold_collector() as collector:
        return _training(config, as_of, n_trials, reason, collector)


def _training(
    config: str, as_of: str | None, n_trials: int | None, reason: str, collector: HeldCollector
) -> dict[str, Any]:
    logger = get_run_logger()
    # Deployment triggers render parameters as strings: cast them back here.
    n_trials = int(n_trials) if n_trials not in (None, "", "None") else None
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
    cfg = load_config(config)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    run_dir_key = flow_run_id() or "local"

    # GX runs in a process of its own, started now: its imports (pure Python, ~2 s) then use the
    # other core while this one loads the data and imports Feast, instead of taking turns on one GIL.
    with ValidatorProcess() as validator:
        # ── 1. Validate ─────────────────────────────────────────────────────────────────────────────
        with stage(timings, "load"):
            raw = load_raw_data(cfg)
            flights = prepare(cfg, raw)
            cutoff = parse_as_of(as_of, flights)
            windows = plan_windows(cutoff, cfg.window)
            batch, lo, hi = raw_batch(raw, flights, windows)
            report_dir = cfg.reports_dir / "validation" / run_dir_key
        # The raw batch is validated beside the retrieval (both only read): nothing is tuned, trained,
        # logged or registered before its verdict is in.
        raw_check = validate_batch.submit(batch, report_dir, f"Raw batch {lo:%Y-%m-%d} .. {hi:%Y-%m-%d}", validator)

        # ── 2. Retrieve (point-in-time, through Feast) ─────────────────────────────────────────────
        with stage(timings, "retrieve"):
            from evergreen import tracking
            from evergreen.feature_store import feature_names
            from tasks.features import retrieve

            columns = model_columns(feature_names(cfg))  # imports Feast (pure Python, one core)
            # MLflow's imports and first-use costs, paid while DuckDB joins the features and GX checks
            # the frame (both release the GIL, and the other core is free by then) instead of in the
            # tuning, where LightGBM keeps both cores busy. (The tuning's own imports were tried here
            # too: with the wait below they gained nothing, see docs/benchmarks.md.)
            warm = prewarm(
                "mlflow.pyfunc",
                lambda: tracking.warm_up(cfg.tracking_uri, cfg.registry.experiment, cfg.artifact_root),
            )
            frame = retrieve(cfg, flights, windows.start, windows.end)
            train, holdout = split_frame(frame, windows)
        with stage(timings, "validate_raw"):  # what is left of it once the retrieval is done
            raw_results = raw_check.result()
        with stage(timings, "validate_frame"):
            frame_results = validate_batch(
                {"training_frame": pd.concat([train, holdout])}, report_dir, "Assembled training frame", validator
            )
    logger.info("training rows %d, holdout rows %d, %d features", len(train), len(holdout), len(columns))

    # ── 3. Tune ─────────────────────────────────────────────────────────────────────────────────
    # The warm-up's imports end before the tuning imports anything: two threads importing the same
    # package at once can see it half-initialised (Optuna and MLflow share SQLAlchemy and Alembic).
    with stage(timings, "warm_up_wait"):
        warm.join()
    collector.settle()  # the long-lived heap is built: later collections leave it out
    with stage(timings, "tune"):
        data_fp = tracking.frame_fingerprint(train[["flight_id", "delayed", *columns]])
        study_name = f"{cfg.registry.model_name}-{cutoff:%Y%m%dT%H%M}-{cfg.digest[:8]}-{data_fp[:8]}"
        tuning, study = tune_model(cfg, train, columns, windows, study_name, n_trials)

    # ── 4. Train and log ────────────────────────────────────────────────────────────────────────
    with stage(timings, "train"):
        booster, categories, final_params = train_model(cfg, train, columns, tuning, windows)
    lineage = {
        "evergreen.git_sha": tracking.git_sha(),
        "evergreen.config_hash": cfg.digest,
        "evergreen.lock_hash": tracking.file_hash(tracking.ROOT / "uv.lock"),
        "evergreen.data_window": f"{windows.start.isoformat()}/{windows.end.isoformat()}",
        "evergreen.data_fingerprint": data_fp,
        "evergreen.raw_fingerprint": raw.fingerprint(),
        "evergreen.feature_service": cfg.features.feature_service,
        "evergreen.as_of": cutoff.isoformat(),
        "evergreen.reason": reason,
        "evergreen.flow_run": flow_run_id() or "",
    }
    with stage(timings, "log_model"):
        logged = log_run(
            cfg,
            booster=booster,
            categories=categories,
            final_params=final_params,
            tuning=tuning,
            study=study,
            columns=columns,
            train=train,
            holdout=holdout,
            windows=windows,
            tags=lineage,
            validation_reports=[r.report_path for r in [*raw_results, *frame_results] if r.report_path],
        )

    # ── 5. Gate ─────────────────────────────────────────────────────────────────────────────────
    with stage(timings, "gate"):
        champion_version, champion_scores = score_champion(cfg, holdout)
        decision, decision_path = run_gate(
            cfg,
            holdout,
            logged.holdout_scores,
            champion_version,
            champion_scores,
            logged.run_id,
            {"start": windows.holdout_start.isoformat(), "end": windows.end.isoformat()},
        )

    # ── 6. Register and promote ─────────────────────────────────────────────────────────────────
    # With rollout enabled, a passing challenger reaches traffic through the canary rollout instead.
    hand_off = decision.passed and cfg.rollout.enabled and champion_version is not None
    with stage(timings, "register"):
        outcome = register_and_promote(
            cfg, logged.model_uri, logged.run_id, decision, lineage, reason, flow_run_id(), promote=not hand_off
        )
    rollout_summary = None
    if hand_off:
        with stage(timings, "rollout"):
            rollout_summary = run_rollout(config, outcome["version"], reason)
            outcome["champion"] = rollout_summary["champion"]

    tracking.log_metrics(cfg.tracking_uri, logged.run_id, {f"stage_seconds.{k}": v for k, v in timings.items()})
    table_artifact(
        [{"stage": k, "seconds": v} for k, v in timings.items()],
        "training-stage-timings",
        "Wall time of each training stage",
    )
    summary = {
        "as_of": cutoff.isoformat(),
        "model_name": cfg.registry.model_name,
        "version": outcome["version"],
        "champion": outcome["champion"],
        "previous_champion": outcome["previous_champion"],
        "gate": decision.verdict,
        "gate_reasons": decision.reasons,
        "holdout": decision.challenger,
        "mlflow_run_id": logged.run_id,
        "decision_record": str(decision_path),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "tuning_trials": tuning.n_trials,
        "tuning_search_seconds": tuning.search_seconds,
        "tuning_search_cpu_seconds": tuning.search_cpu_seconds,
        "rollout": rollout_summary,
        "timings": timings,
        "flow_seconds": round(time.perf_counter() - started, 3),
    }
    if rollout_summary:
        print(f"rollout {rollout_summary['status']}: {'; '.join(rollout_summary['reasons'])}")
    print(f"gate {decision.verdict}: version {outcome['version']}, champion is v{outcome['champion']}")
    return summary


def run_rollout(config: str, version: str, reason: str) -> dict[str, Any]:
    """The rollout flow as a subflow; its failure (a rollback) is reported, not re-raised: the
    training run did its job, and the rollout's own run shows as failed with its decision record."""
    from evergreen import registry
    from flows.rollout import rollout

    state = rollout(config=config, version=version, reason=f"gate passed ({reason})", return_state=True)
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
        "--as-of", default=None, help="train only on what was known then, e.g. 2013-06-01 (default: end of data)"
    )
    p.add_argument("--trials", type=int, default=None, help="override tuning.n_trials")
    p.add_argument("--reason", choices=REASONS, default="manual", help="why this run happens (recorded on the model)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.cli import run_flow

    return run_flow(
        lambda: training(config=args.config, as_of=args.as_of, n_trials=args.trials, reason=args.reason),
        lambda s: json.dumps(s, indent=1, default=str),
    )


if __name__ == "__main__":
    from flows.cli import exit_now

    exit_now(main())
