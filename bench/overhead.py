"""Orchestration + tracking + validation overhead of the training flow.

Runs, each in a fresh process, side by side:
  bare  - the same compute as a plain script: load, prepare, Feast retrieval, Optuna tuning, final
          fit, holdout scoring and the bootstrap gate against the previous run's model (the flow's
          champion); no Prefect, no MLflow, no GX;
  flow  - ``python -m flows.training`` on the same data, config and trial budget. By default
          (``--server temporary``) with no ``PREFECT_API_URL``, as a user runs it from a shell: each
          process starts Prefect's temporary local server itself and stops it at exit. With
          ``--server external`` the runs report to one Prefect server the benchmark starts first, as a
          worker's flow runs report to theirs.
Both sides end the same way: a normal interpreter exit, teardown included (the bare script ends with
``sys.exit(0)``, the flow's entry point with ``sys.exit(main())``).

Prints each pair's walls and ratio, the median time of every stage for both side by side, the share
of the flow process spent in validation and tracking stages and outside its stages, the pair ratios'
median (with a 95% bootstrap interval) and range, the verdict against the target (flow / bare <= 1.05)
and the ratio of the median process walls. The Optuna trials (same data, seed and trials on both
sides) are most of the wall and where this machine's drift shows most, so the script also prints how
much longer the flow takes outside the trials (everything else: imports, the study's storage, every
other stage, start and exit), and the ratio that gives with the same trials time on both sides: a
steadier figure to compare changes with, which leaves out any slowdown of the trials themselves (the
per-pair difference of the trials is printed beside it).

    uv run --frozen python bench/overhead.py --as-of 2013-07-01 --trials 50 --repeat 40 | tee run.log   # 80-90 min

One run of 40 pairs is about what it takes on a noisy 2-core machine to tell a 5% overhead from the
trials' noise. ``--pool run1.log run2.log ...`` reads the pair lines of saved outputs (a run cut short
included) and prints the same pair figures for all of them together, without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.05  # flow / bare, the median of the pair ratios

BARE = r"""
import json, sys, time
t0 = time.perf_counter(); marks = {}
def mark(name, t=[t0]):
    now = time.perf_counter(); marks[name] = round(now - t[0], 3); t[0] = now
from pathlib import Path
import lightgbm as lgb
import pandas as pd
from evergreen import feature_store
from evergreen.config import load_config
from evergreen.features import model_columns, to_model_frame
from evergreen.gate import decide
from evergreen.problem import check_prepared, load_problem
from evergreen.training import TrainingSet, plan_windows, train_final, tune
mark("imports")
cfg = load_config(sys.argv[1]); as_of = pd.Timestamp(sys.argv[2], tz="UTC"); trials = int(sys.argv[3])
problem = load_problem(cfg)
raw = problem.load_tables(cfg.data.source)
f = problem.prepare(raw.tables)
check_prepared(f, cfg.problem, cfg.problem.module, cfg.gate.slices)  # part of the flow's prepare task
w = plan_windows(as_of, cfg.window)
mark("load")
frame = feature_store.features_for(cfg, f, w.start, w.end)
columns = model_columns(cfg.problem.request_features, feature_store.feature_names(cfg))
data = TrainingSet.from_frame(frame, w, columns, cfg.problem)
mark("retrieve")
res, study = tune(data, cfg.tuning, "sqlite:///" + sys.argv[4], "bare", trials)
mark("tune")
marks["search"] = res.search_seconds  # the trials alone, inside the tune stage
marks["search_cpu"] = res.search_cpu_seconds
model = train_final(data, cfg.tuning, res)
mark("train")
holdout = data.holdout
p = model.predict(holdout)
# The champion is the previous run's model, scored on the same holdout, as the flow's gate does.
champion = Path(sys.argv[5])
p_old = None
if champion.is_file():
    old_cats = json.loads(champion.with_suffix(".json").read_text())
    p_old = lgb.Booster(model_file=str(champion)).predict(to_model_frame(holdout, data.columns, old_cats))
decide(holdout, holdout[data.label].to_numpy(), p, p_old, cfg.gate)
model.booster.save_model(str(champion)); champion.with_suffix(".json").write_text(json.dumps(model.categories))
mark("gate")
print(json.dumps(marks))
sys.exit(0)  # a normal exit, interpreter teardown included, as the flow's sys.exit(main())
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return wall, out.stdout


@contextmanager
def prefect_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """A Prefect server on a free 127.0.0.1 port for the benchmark's flow runs; stopped on exit."""
    from deployments.stack import free_ports

    (port,) = free_ports(1)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the Prefect server did not start; its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def flow_summary(out: str) -> dict:
    """The flow's JSON summary: the last thing it prints, from a line holding only "{"."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    summary: dict = json.loads("\n".join(lines[start:]))
    return summary


def overhead_share(stages: dict[str, float], process: float) -> dict[str, float]:
    """Validation = the GX stages; tracking = logging and registering the model; outside = the flow
    process's time outside its stages (imports, Prefect's run start and end, a temporary server's start
    and stop, interpreter exit): each in seconds, and their total as a share of the process wall."""
    validation = sum(v for k, v in stages.items() if k.startswith("validate"))
    tracking = sum(stages.get(k, 0.0) for k in ("log", "log_model", "register"))
    outside = max(process - sum(stages.values()), 0.0)
    return {
        "validation": validation,
        "tracking": tracking,
        "outside": outside,
        "process": process,
        "total": (validation + tracking + outside) / process,
    }


def median_ci(values: list[float], confidence: float = 0.95, resamples: int = 10_000) -> tuple[float, float]:
    """Percentile bootstrap interval of the median: how far the median of this many noisy pairs can
    be trusted (on this machine one pair's ratio moves by up to 0.1 with the trials' speed)."""
    rng = random.Random(0)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return medians[int(tail * resamples)], medians[min(int((1 - tail) * resamples), resamples - 1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--as-of", default="2013-07-01")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--server",
        choices=("temporary", "external"),
        default="temporary",
        help="temporary: each flow process starts Prefect's temporary local server, as a shell run with no "
        "PREFECT_API_URL does (default); external: all flow runs report to one server started by the "
        "benchmark, as a worker's runs do",
    )
    p.add_argument("--pool", nargs="+", type=Path, metavar="LOG", help="pool the pairs of saved outputs; run nothing")
    args = p.parse_args()
    if args.pool:
        pool(args.pool)
        return
    base = Path(tempfile.mkdtemp(prefix="evergreen-bench-"))
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")},
        "EVERGREEN_HOME": str(base / "home"),
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # No .pyc would be written: every process would compile every import again, and the flow
        # imports more than the bare script. A deployed image has its bytecode compiled
        # (UV_COMPILE_BYTECODE in the Dockerfile), any other machine after its first run; keep one here.
        env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
    config = str(ROOT / "configs" / "default.yaml")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    run([sys.executable, "-m", "flows.features", "--config", config], env)
    try:
        if args.server == "temporary":
            print("flow runs: no PREFECT_API_URL; each process starts Prefect's temporary server (a shell run)")
            measure(args, env, config, base)
        else:
            with prefect_server(env, base / "prefect-server.log") as url:
                print(f"flow runs: reporting to an external Prefect server at {url} (a worker's runs)")
                measure(args, {**env, "PREFECT_API_URL": url}, config, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def measure(args: argparse.Namespace, env: dict[str, str], config: str, base: Path) -> None:
    bare, flow, shares, outside = [], [], [], []
    bare_stages: list[dict[str, float]] = []
    search: dict[str, list[float]] = {"bare": [], "flow": []}  # wall time of the trials alone
    search_cpu: dict[str, list[float]] = {"bare": [], "flow": []}  # the process's CPU time over them
    flow_stages: list[dict[str, float]] = []
    for i in range(-1, args.repeat):  # round -1 warms the bytecode cache and the server's database; not counted
        for f in (base / "home").glob("optuna.db"):
            f.unlink()  # every repetition tunes from scratch, like the bare script
        trials = str(args.trials if i >= 0 else 2)

        def run_bare(i: int = i, trials: str = trials) -> None:
            db, champion = base / f"bare-{i}.db", base / "bare-champion.txt"
            wall, out = run([sys.executable, "-c", BARE, config, args.as_of, trials, str(db), str(champion)], env)
            if i >= 0:
                bare.append(wall)
                marks = json.loads(out.strip().splitlines()[-1])
                search["bare"].append(marks.pop("search"))
                search_cpu["bare"].append(marks.pop("search_cpu"))
                bare_stages.append({**marks, "process": wall})

        def run_flow(i: int = i, trials: str = trials) -> None:
            cmd = [sys.executable, "-m", "flows.training", "--config", config, "--as-of", args.as_of]
            wall, out = run([*cmd, "--n-trials", trials], env)
            if i >= 0:
                flow.append(wall)
                summary = flow_summary(out)
                stages = summary["timings"]
                body = summary.get("flow_seconds") or sum(stages.values())
                search["flow"].append(summary["tuning_search_seconds"])
                search_cpu["flow"].append(summary["tuning_search_cpu_seconds"])
                flow_stages.append({**stages, "body": body, "process": wall})
                shares.append(overhead_share(stages, wall))

        # Alternate which goes first: a machine speeding up or slowing down over the run then favours
        # neither side.
        for step in (run_bare, run_flow) if i % 2 else (run_flow, run_bare):
            step()
        if i >= 0:
            # The trials are the same compute on both sides (same data, seed and trials) and most of the
            # wall: the machine's drift shows mostly there. The rest of each process, imports and the
            # study's storage included, is where the flow's own work lies, and it is steadier.
            outside.append((flow[-1] - search["flow"][-1]) - (bare[-1] - search["bare"][-1]))
            print(
                f"rep {i + 1}: bare {bare[-1]:.1f} s, flow process {flow[-1]:.1f} s (x{flow[-1] / bare[-1]:.3f}), "
                f"flow body {flow_stages[-1]['body']:.1f} s; trials bare {search['bare'][-1]:.1f} s, "
                f"flow {search['flow'][-1]:.1f} s (CPU {search_cpu['bare'][-1]:.1f} and {search_cpu['flow'][-1]:.1f} s); "
                f"flow - bare outside the trials {outside[-1]:+.2f} s"
            )
    print("\nmedian stage timings (s):")
    print(f"  {'stage':<16}{'bare':>8}{'flow':>8}")
    names = dict.fromkeys([*flow_stages[0], *bare_stages[0]])
    for k in [n for n in names if n not in ("body", "process")] + ["body", "process"]:
        cells = []
        for runs in (bare_stages, flow_stages):
            values = [r[k] for r in runs if k in r]
            cells.append(f"{statistics.median(values):>8.2f}" if values else f"{'-':>8}")
        print(f"  {k:<16}{''.join(cells)}")
    share = statistics.median(s["total"] for s in shares)
    last = shares[-1]
    print(
        f"\nin the flow process (last run): validation {last['validation']:.2f} s, tracking {last['tracking']:.2f} s, "
        f"outside the stages {last['outside']:.2f} s, of {last['process']:.2f} s"
    )
    print(f"validation + tracking + outside the stages, share of the flow process: median {share:.1%}")
    print_pairs(bare, flow, outside, search, search_cpu)


def print_pairs(
    bare: list[float],
    flow: list[float],
    outside: list[float],
    search: dict[str, list[float]],
    search_cpu: dict[str, list[float]],
) -> None:
    """The figures that need only each pair's walls: process walls, the trials' walls and CPU time, and
    the flow's time outside the trials."""
    b, f = statistics.median(bare), statistics.median(flow)
    print(f"median process wall: bare {b:.1f} s, flow {f:.1f} s")
    # Back-to-back pairs share the machine's state of the moment (this machine's speed drifts over
    # minutes, by a third at worst), in alternating order: the pairs' ratios show the spread, and
    # their median is steadier under that drift than the ratio of the medians.
    pairs = sorted(x / y for x, y in zip(flow, bare, strict=True))
    lo_p, hi_p = median_ci(pairs)
    print(
        f"pair ratios: median {statistics.median(pairs):.3f} (95% bootstrap interval {lo_p:.3f} .. {hi_p:.3f}), "
        f"range {pairs[0]:.3f} .. {pairs[-1]:.3f}"
    )
    extra = statistics.median(outside)
    lo, hi = median_ci(outside)
    print(
        f"flow - bare outside the trials: median {extra:+.2f} s (95% bootstrap interval {lo:+.2f} .. {hi:+.2f}), "
        f"range {min(outside):+.2f} .. {max(outside):+.2f} s"
    )
    slower = [f - x for f, x in zip(search["flow"], search["bare"], strict=True)]
    print(
        f"trials: medians bare {statistics.median(search['bare']):.1f} s, flow {statistics.median(search['flow']):.1f} s; "
        f"flow - bare per pair median {statistics.median(slower):+.2f} s, longer in the flow in "
        f"{sum(d > 0 for d in slower)} of {len(slower)} pairs"
    )
    ratios = [f / x for f, x in zip(search["flow"], search["bare"], strict=True)]
    lo_t, hi_t = median_ci(ratios)
    print(
        f"trials, flow / bare per pair: median {statistics.median(ratios):.3f} (95% bootstrap interval {lo_t:.3f} .. {hi_t:.3f})"
    )
    # CPU time counts what the flow's process itself adds (its other threads, LightGBM's threads spinning
    # at a barrier while one of them waits for a core) and leaves out steal the kernel accounts for. A
    # virtual core that just runs slower is charged as CPU time too, so it grows with the wall time there.
    cpu = [f / x for f, x in zip(search_cpu["flow"], search_cpu["bare"], strict=True)]
    if cpu:  # outputs saved before the tuning reported its CPU time have none
        lo_c, hi_c = median_ci(cpu)
        print(
            f"trials' CPU time, flow / bare per pair: median {statistics.median(cpu):.3f} (95% bootstrap interval "
            f"{lo_c:.3f} .. {hi_c:.3f}), higher in the flow in {sum(r > 1 for r in cpu)} of {len(cpu)} pairs"
        )
    print(
        f"with the same trials time on both sides: (bare + {extra:.2f} s) / bare = {(b + extra) / b:.3f} "
        f"(interval {(b + lo) / b:.3f} .. {(b + hi) / b:.3f})"
    )
    pair_median = statistics.median(pairs)
    verdict = "met" if pair_median <= TARGET else "NOT met"
    settled = "undecided: the interval straddles it" if lo_p <= TARGET < hi_p else "the interval agrees"
    print(
        f"target flow / bare <= {TARGET}: {verdict} by the pair median {pair_median:.3f} "
        f"(interval {lo_p:.3f} .. {hi_p:.3f}; {settled})"
    )
    print(f"ratio flow/bare = {f / b:.3f}")


# One line per pair, as measure() prints it; the CPU field is absent from outputs saved before it existed.
PAIR_LINE = re.compile(
    r"^rep \d+: bare ([\d.]+) s, flow process ([\d.]+) s .*?; trials bare ([\d.]+) s, flow ([\d.]+) s"
    r"(?: \(CPU ([\d.]+) and ([\d.]+) s\))?; flow - bare outside the trials ([+-][\d.]+) s$",
    re.MULTILINE,
)


def pool(logs: list[Path]) -> None:
    """Pair figures over the pairs of several saved outputs, resampled together."""
    bare, flow, outside = [], [], []
    search: dict[str, list[float]] = {"bare": [], "flow": []}
    search_cpu: dict[str, list[float]] = {"bare": [], "flow": []}
    for log in logs:
        found = PAIR_LINE.findall(log.read_text())
        if not found:
            sys.exit(f"{log}: no pair lines ('rep N: bare ...'); pass the saved output of bench/overhead.py")
        print(f"{log}: {len(found)} pairs")
        for b, f, sb, sf, cb, cf, out in found:
            bare.append(float(b))
            flow.append(float(f))
            search["bare"].append(float(sb))
            search["flow"].append(float(sf))
            if cb:
                search_cpu["bare"].append(float(cb))
                search_cpu["flow"].append(float(cf))
            outside.append(float(out))
    print(f"pooled: {len(bare)} pairs (walls as printed, to 0.1 s)")
    print_pairs(bare, flow, outside, search, search_cpu)


if __name__ == "__main__":
    main()
