"""Tuning wall time with 1, 2 and 4 parallel tuners at one fixed trial budget, on one study.

Equal work on every side: the same training set, trial budget, boosting limits and storage kind;
each run gets a fresh study. The tuners run as the training flow runs them (``tuning.workers``):
``plan_tuning`` creates the study once, then one ``run_tuner`` per share on a thread pool, which is
what Prefect's default task runner is; each tuner builds its own datasets and uses
``threads // workers`` LightGBM threads. The orders of the runs are interleaved (1, 2, 4, 4, 2, 1, ...)
so the machine's drift spreads over all of them.

``--dask N`` adds runs of N tuners on a local Dask cluster (N one-thread worker processes, started
once before the runs), as ``tuning.dask_address`` runs them: the training set is scattered to the
cluster once per run (its time is part of the wall), each tuner trains with ``threads // N``
LightGBM threads, as the thread runs do, so both sides do equal work on this machine. The Dask rows
measure the mechanism (shipping the data, separate processes), not Prefect's task-run bookkeeping,
which is the same on both sides.

Prints per run: tuners, wall, trials finished, pruned, best valid AUC, CPU use (process CPU seconds
over wall), then the median wall per tuner count and its speed-up over one tuner, and what the
study's storage alone costs per trial (the same suggestions and pruning reports, no model): the
part of a trial that more tuners cannot shrink and a remote database makes longer.

    uv run --frozen python -m flows.features --as-of 2013-07-01       # once: the training set's features
    uv run --frozen python bench/tuning.py --as-of 2013-07-01 --trials 24 --repeat 3
    uv run --frozen python bench/tuning.py --storage postgresql+psycopg://u:p@host/db ...
    uv run --frozen python bench/tuning.py --trials 16 --repeat 2 --tuners 1,2 --dask 2
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
from evergreen.training import TrainingSet, plan_tuning, plan_windows, run_tuner, summarise_tuning, threads


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


def one_run(
    cfg: Any, data: TrainingSet, storage: str, workers: int, trials: int, name: str, dask: Any = None
) -> dict[str, Any]:
    """One search; on the Dask client ``dask`` when given (then ``threads // workers`` LightGBM
    threads per tuner, set explicitly, since a Dask tuner otherwise takes every core)."""
    update = {"workers": workers, "n_trials": trials, "timeout_seconds": 3600}
    if dask is not None:
        update["threads"] = max(1, threads(cfg.tuning) // workers)
    tuning = cfg.tuning.model_copy(update=update)
    started, cpu = time.perf_counter(), time.process_time()
    plan = plan_tuning(storage, name, tuning)
    tuners = range(len(plan.shares))
    if dask is None:
        with ThreadPoolExecutor(max_workers=len(plan.shares)) as pool:
            for f in [pool.submit(run_tuner, data, tuning, storage, plan, i) for i in tuners]:
                f.result()
    else:
        shipped = dask.scatter(data)
        futures = [
            dask.submit(run_tuner, shipped, tuning, storage, plan, i, own_cores=True, pure=False) for i in tuners
        ]
        dask.gather(futures)
    wall = time.perf_counter() - started
    result, _ = summarise_tuning(storage, tuning, plan, wall, 0.0)
    return {
        "tuners": f"{workers} on dask" if dask is not None else str(workers),
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
    p.add_argument("--dask", type=int, default=0, help="also N tuners on a local Dask cluster of N workers")
    args = p.parse_args()
    counts: list[int | str] = [int(x) for x in args.tuners.split(",")]
    client = None
    if args.dask:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.dask, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        counts.append(f"{args.dask} on dask")
    cfg, data = training_set(args.config, args.as_of)
    print(
        f"{len(data.train)} training rows, {len(data.columns)} features, {args.trials} trials, {os.cpu_count()} cores"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for kind in counts if r % 2 == 0 else counts[::-1]:
                on_dask = isinstance(kind, str)
                workers = args.dask if on_dask else int(kind)
                name = f"bench-{workers}{'-dask' if on_dask else ''}-{r}-{time.time_ns()}"
                storage = args.storage or f"sqlite:///{tmp}/{name}.db"
                row = one_run(cfg, data, storage, workers, args.trials, name, client if on_dask else None)
                rows.append(row)
                print(
                    f"tuners {row['tuners']}: {row['wall']:6.1f} s, {row['trials']} trials ({row['pruned']} pruned), "
                    f"best {row['best']:.4f}, cpu use {row['cpu_use']:.2f}",
                    flush=True,
                )
        per_trial = storage_only(
            args.storage or f"sqlite:///{tmp}/storage-only.db", cfg, args.trials, f"only-{time.time_ns()}"
        )
    if client is not None:
        client.close()
        cluster.close()
    base = statistics.median(r["wall"] for r in rows if r["tuners"] == str(counts[0]))
    print("\ntuners        median wall  speed-up  median best")
    for kind in counts:
        mine = [r for r in rows if r["tuners"] == str(kind)]
        wall = statistics.median(r["wall"] for r in mine)
        best = statistics.median(r["best"] for r in mine)
        print(f"{kind!s:>12}  {wall:9.1f} s  {base / wall:7.2f}x  {best:11.4f}")
    reports = cfg.tuning.max_boost_rounds // cfg.tuning.report_interval
    print(
        f"storage alone: {per_trial * 1000:.0f} ms per trial ({reports} pruning reports and checks, "
        f"suggestions, result) = {per_trial * args.trials / base:.1%} of one tuner's wall"
    )


if __name__ == "__main__":
    main()
