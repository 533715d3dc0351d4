"""Tuning wall time with 1, 2 and 4 parallel tuners at one fixed trial budget, on one study.

Equal work on every side: the same training set, trial budget, boosting limits and storage kind;
each run gets a fresh study. The tuners run as the training flow runs them (``tuning.workers``):
``plan_tuning`` creates the study once, then one ``run_tuner`` per share on a thread pool, which is
what Prefect's default task runner is; each tuner builds its own datasets and uses
``threads // workers`` LightGBM threads. The orders of the runs are interleaved (1, 2, 4, 4, 2, 1, ...)
so the machine's drift spreads over all of them.

Prints per run: tuners, wall, trials finished, pruned, best valid AUC, CPU use (process CPU seconds
over wall), then the median wall per tuner count and its speed-up over one tuner, and what the
study's storage alone costs per trial (the same suggestions and pruning reports, no model): the
part of a trial that more tuners cannot shrink and a remote database makes longer.

    uv run --frozen python -m flows.features --as-of 2013-07-01       # once: the training set's features
    uv run --frozen python bench/tuning.py --as-of 2013-07-01 --trials 24 --repeat 3
    uv run --frozen python bench/tuning.py --storage postgresql+psycopg://u:p@host/db ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
import pandas as pd

from evergreen import feature_store
from evergreen.config import load_config
from evergreen.features import model_columns
from evergreen.problem import load_problem
from evergreen.training import TrainingSet, plan_tuning, plan_windows, run_tuner, summarise_tuning


def storage_only(storage: str, cfg: Any, trials: int, name: str) -> float:
    """Seconds per trial of the study's storage alone: the same suggestions and pruning reports a
    tuner's trial makes (one report every report_interval rounds up to max_boost_rounds, each
    followed by the pruner's check), with no model trained."""
    from evergreen.training import open_study, suggest_params

    study = open_study(storage, name, cfg.tuning, cfg.tuning.seed)
    reports = cfg.tuning.max_boost_rounds // cfg.tuning.report_interval

    def objective(trial: optuna.Trial) -> float:
        suggest_params(trial)
        for step in range(reports):
            trial.report(0.5 + step * 1e-4, step * cfg.tuning.report_interval)
            trial.should_prune()
        return 0.5

    started = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return (time.perf_counter() - started) / trials


def training_set(config: str, as_of: str) -> tuple[Any, TrainingSet]:
    cfg = load_config(config)
    problem = load_problem(cfg)
    prepared = problem.prepare(problem.load_tables(cfg.data.source).tables)
    w = plan_windows(pd.Timestamp(as_of, tz="UTC"), cfg.window)
    frame = feature_store.features_for(cfg, prepared, w.start, w.end)
    columns = model_columns(cfg.problem.request_features, feature_store.feature_names(cfg))
    return cfg, TrainingSet.from_frame(frame, w, columns, cfg.problem)


def one_run(cfg: Any, data: TrainingSet, storage: str, workers: int, trials: int, name: str) -> dict[str, Any]:
    tuning = cfg.tuning.model_copy(update={"workers": workers, "n_trials": trials, "timeout_seconds": 3600})
    started, cpu = time.perf_counter(), time.process_time()
    plan = plan_tuning(storage, name, tuning)
    with ThreadPoolExecutor(max_workers=len(plan.shares)) as pool:
        for f in [pool.submit(run_tuner, data, tuning, storage, plan, i) for i in range(len(plan.shares))]:
            f.result()
    wall = time.perf_counter() - started
    result, _ = summarise_tuning(storage, tuning, plan, wall, 0.0)
    return {
        "tuners": workers,
        "wall": wall,
        "trials": result.n_trials,
        "pruned": result.n_pruned,
        "best": result.best_value,
        "cpu_use": (time.process_time() - cpu) / wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.environ.get("EVERGREEN_CONFIG", "configs/default.yaml"))
    p.add_argument("--as-of", default="2013-07-01")
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--tuners", default="1,2,4")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--storage", default="", help="an RDB URL; default a fresh SQLite file per run")
    args = p.parse_args()
    counts = [int(x) for x in args.tuners.split(",")]
    cfg, data = training_set(args.config, args.as_of)
    print(
        f"{len(data.train)} training rows, {len(data.columns)} features, {args.trials} trials, {os.cpu_count()} cores"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for workers in counts if r % 2 == 0 else counts[::-1]:
                name = f"bench-{workers}-{r}-{time.time_ns()}"
                storage = args.storage or f"sqlite:///{tmp}/{name}.db"
                row = one_run(cfg, data, storage, workers, args.trials, name)
                rows.append(row)
                print(
                    f"tuners {workers}: {row['wall']:6.1f} s, {row['trials']} trials ({row['pruned']} pruned), "
                    f"best {row['best']:.4f}, cpu use {row['cpu_use']:.2f}",
                    flush=True,
                )
        per_trial = storage_only(
            args.storage or f"sqlite:///{tmp}/storage-only.db", cfg, args.trials, f"only-{time.time_ns()}"
        )
    base = statistics.median(r["wall"] for r in rows if r["tuners"] == counts[0])
    print("\ntuners  median wall  speed-up  median best")
    for workers in counts:
        mine = [r for r in rows if r["tuners"] == workers]
        wall = statistics.median(r["wall"] for r in mine)
        best = statistics.median(r["best"] for r in mine)
        print(f"{workers:6d}  {wall:9.1f} s  {base / wall:7.2f}x  {best:11.4f}")
    reports = cfg.tuning.max_boost_rounds // cfg.tuning.report_interval
    print(
        f"storage alone: {per_trial * 1000:.0f} ms per trial ({reports} pruning reports and checks, "
        f"suggestions, result) = {per_trial * args.trials / base:.1%} of one tuner's wall"
    )


if __name__ == "__main__":
    main()
