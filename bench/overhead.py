"""Orchestration + tracking + validation overhead of the training flow.

Runs, each in a fresh process (as a deployment would), side by side:
  bare  - the same compute as a plain script: load, prepare, Feast retrieval, Optuna tuning, final
          fit, holdout scoring and the bootstrap gate; no Prefect, no MLflow, no GX;
  flow  - ``python -m flows.training`` on the same data, config and trial budget.
Prints the per-stage table of the last flow run, medians of both walls, and the ratio.

    uv run python bench/overhead.py --as-of 2013-07-01 --trials 30 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE = r"""
import sys, time
t0 = time.perf_counter()
import pandas as pd
from evergreen.config import load_config
from evergreen.data import load_raw, prepare_flights
from evergreen.features import entity_frame, model_columns, to_model_frame
from evergreen import feature_store
from evergreen.training import plan_windows, split_frame, tune, train_final, fit_rows
from evergreen.gate import decide
cfg = load_config(sys.argv[1]); as_of = pd.Timestamp(sys.argv[2], tz="UTC"); trials = int(sys.argv[3])
raw = load_raw(cfg.data.source)
f = prepare_flights(raw.flights, cfg.problem.lead_time_hours, cfg.problem.delay_threshold_minutes)
w = plan_windows(as_of, cfg.window)
frame = feature_store.historical_features(cfg, entity_frame(f, w.start, w.end))
cols = model_columns(feature_store.feature_names(cfg))
train, holdout = split_frame(frame, w)
res, study = tune(train, cols, cfg.tuning, w.validation_start, "sqlite:///" + sys.argv[4], "bare", trials)
booster, cats, _ = train_final(train, cols, cfg.tuning, res, fit_rows(train, w.validation_start))
p = booster.predict(to_model_frame(holdout, cols, cats))
decide(holdout, holdout["delayed"].to_numpy(), p, None, cfg.gate)
print(time.perf_counter() - t0)
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return wall, out.stdout


def overhead_share(stages: dict[str, float], flow_seconds: float) -> dict[str, float]:
    """Validation = what the GX stages add to the critical path; tracking = logging and registering
    the model; orchestration = the flow body's time outside any stage (task and state handling)."""
    validation = stages.get("validate_raw", 0) + stages.get("validate_frame", 0)
    tracking = stages.get("log_model", 0) + stages.get("register", 0)
    orchestration = max(flow_seconds - sum(stages.values()), 0.0)
    total = (validation + tracking + orchestration) / flow_seconds
    return {
        "validation": validation,
        "tracking": tracking,
        "orchestration": orchestration,
        "flow": flow_seconds,
        "total": total,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--as-of", default="2013-07-01")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="evergreen-bench-"))
    env = {
        **os.environ,
        "EVERGREEN_HOME": str(base / "home"),
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    config = str(ROOT / "configs" / "default.yaml")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    run([sys.executable, "-m", "flows.features", "--config", config], env)
    bare, flow, stages, shares = [], [], {}, []
    for i in range(args.repeat):
        for f in (base / "home").glob("optuna.db"):
            f.unlink()  # every repetition tunes from scratch, like the bare script
        db = base / f"bare-{i}.db"
        wall, out = run([sys.executable, "-c", BARE, config, args.as_of, str(args.trials), str(db)], env)
        bare.append(wall)
        wall, out = run(
            [
                sys.executable,
                "-m",
                "flows.training",
                "--config",
                config,
                "--as-of",
                args.as_of,
                "--trials",
                str(args.trials),
            ],
            env,
        )
        flow.append(wall)
        summary = json.loads(out[out.index("{") :])
        stages, flow_seconds = summary["timings"], summary["flow_seconds"]
        shares.append(overhead_share(stages, flow_seconds))
        print(f"rep {i + 1}: bare {bare[-1]:.1f} s, flow process {flow[-1]:.1f} s, flow body {flow_seconds:.1f} s")
    print("\nstage timings of the last flow run (s):")
    for k, v in stages.items():
        print(f"  {k:<16}{v:>8.2f}")
    share = statistics.median(s["total"] for s in shares)
    last = shares[-1]
    print(
        f"\nin the flow body (last run): validation {last['validation']:.2f} s, tracking {last['tracking']:.2f} s, "
        f"orchestration {last['orchestration']:.2f} s of {last['flow']:.2f} s"
    )
    print(f"orchestration + tracking + validation share of the flow body: median {share:.1%} (target < 5%)")
    b, f = statistics.median(bare), statistics.median(flow)
    print(f"median process wall: bare {b:.1f} s, flow {f:.1f} s")
    print(f"ratio flow/bare = {f / b:.3f}")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
