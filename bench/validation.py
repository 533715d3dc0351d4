"""Where GX runs in a training run: in the flow's process, or in a worker process beside it.

Both variants do the training flow's first stages, the same work in the same order: load and prepare
the problem's raw tables (``Problem.load_tables``, ``Problem.prepare``), validate the raw batch
(``Problem.raw_batch`` against the suites in ``cfg.suites_dir``), retrieve the point-in-time training frame through Feast,
validate the assembled frame. Each runs in a fresh interpreter (GX's import, about 2 s of pure
Python, is part of what is compared):
  inprocess - GX in the same process, one step after the other (what the training flow does);
  pool      - a ``concurrent.futures.ProcessPoolExecutor`` with one worker, started first: it imports
              GX while this process loads the data, then validates the raw batch while this process
              retrieves the features; the frames cross to it pickled.
Timed: wall time from the start of the work to both verdicts (worker shutdown included), and the
whole process; median of ``--repeat`` runs, the two variants alternating which goes first.

Needs a home whose features are built (``python -m flows.features --config ...``).

    uv run --frozen python bench/validation.py --config configs/default.yaml --as-of 2013-07-01 --repeat 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("inprocess", "pool")


def _import_gx() -> None:
    import great_expectations  # noqa: F401 - imported in the worker while the parent works


def work(variant: str, config: str, as_of: str, out: Path) -> float:
    """The flow's first stages; returns the seconds from their start to both verdicts."""
    from evergreen.config import load_config, parse_as_of
    from evergreen.feature_store import feature_names, features_for
    from evergreen.features import latest_outcome, model_columns
    from evergreen.problem import check_prepared, load_problem
    from evergreen.training import TrainingSet, batch_range, plan_windows
    from evergreen.validation import require_valid, validate_frames

    t0 = time.perf_counter()
    cfg = load_config(config)
    suites = cfg.suites_dir
    pool = ProcessPoolExecutor(1) if variant == "pool" else None
    if pool is not None:
        pool.submit(_import_gx)
    problem = load_problem(cfg)
    raw = problem.load_tables(cfg.data.source)
    prepared = problem.prepare(raw.tables)
    check_prepared(prepared, cfg.problem, cfg.problem.module, cfg.gate.slices)  # as the flow's prepare task
    windows = plan_windows(parse_as_of(as_of, latest_outcome(prepared, cfg.problem)), cfg.window)
    batch = problem.raw_batch(raw, *batch_range(windows, cfg.problem))
    if pool is None:
        require_valid(validate_frames(batch, suites, out / "raw"), suites)
        frame = features_for(cfg, prepared, windows.start, windows.end)
    else:
        raw_check = pool.submit(validate_frames, batch, suites, out / "raw")
        frame = features_for(cfg, prepared, windows.start, windows.end)
        require_valid(raw_check.result(), suites)
    columns = model_columns(cfg.problem.request_features, feature_names(cfg))
    data = TrainingSet.from_frame(frame, windows, columns, cfg.problem)
    frames = {"training_frame": data.frame}
    if pool is None:
        require_valid(validate_frames(frames, suites, out / "frame"), suites)
    else:
        require_valid(pool.submit(validate_frames, frames, suites, out / "frame").result(), suites)
        pool.shutdown()
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        seconds = work(args.child, args.config, args.as_of, Path(tmp))
    print(json.dumps({"work": seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--as-of", default="2013-07-01")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    results: dict[str, dict[str, list[float]]] = {v: {"work": [], "process": []} for v in VARIANTS}
    for i in range(args.repeat + 1):  # round 0 compiles bytecode and warms the OS cache: not counted
        order = VARIANTS if i % 2 else VARIANTS[::-1]
        for v in order:
            t0 = time.perf_counter()
            cmd = [sys.executable, __file__, "--child", v, "--config", args.config, "--as-of", args.as_of]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t0
            if i:
                results[v]["work"].append(json.loads(out.stdout.strip().splitlines()[-1])["work"])
                results[v]["process"].append(wall)
                print(f"round {i} {v:9s} work {results[v]['work'][-1]:6.2f} s  process {wall:6.2f} s", flush=True)

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    med = {v: {k: statistics.median(x) for k, x in r.items()} for v, r in results.items()}
    for v in VARIANTS:
        print(f"{v:9s} median work {med[v]['work']:6.2f} s  process {med[v]['process']:6.2f} s")
    print(
        f"ratio pool / inprocess: work {med['pool']['work'] / med['inprocess']['work']:.3f}, "
        f"process {med['pool']['process'] / med['inprocess']['process']:.3f}"
    )


if __name__ == "__main__":
    main()
