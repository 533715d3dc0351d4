"""Cost of the data contracts: GX's result formats on the training flow's raw batch.

The raw batch is what the training flow validates for ``--as-of``: flights predicted in the training
window and the 31 days of feature history before it, the weather of those days, all planes. Each suite
runs on the columns it reads (``suite_view``), in one process with GX imported once, as the flow's
validation process does. Timed (CPU seconds of this process, median of ``--repeat`` runs, after one
uncounted warm-up):
  - ``evergreen.validation.validate_frames`` with each result format GX offers for every run
    (BOOLEAN_ONLY, BASIC, SUMMARY), reports written as in a flow;
  - ``validate_frames`` as the flows call it: BASIC, and SUMMARY again only for a failing suite.
The batch passes, so the default costs what BASIC does; a failing suite pays for one more SUMMARY run.

    .venv/bin/python bench/validation.py --as-of 2013-07-01 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
from pathlib import Path

import pandas as pd

from evergreen.config import load_config
from evergreen.data import load_raw, prepare_flights
from evergreen.training import plan_windows, raw_batch
from evergreen.validation import defer_unused_imports, load_suite_spec, suite_view, validate_frames

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("BOOLEAN_ONLY", "BASIC", "SUMMARY")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def batch(as_of: str) -> dict[str, pd.DataFrame]:
    """The raw tables the training flow validates for ``as_of``, each cut to the columns its suite reads."""
    cfg = load_config(str(ROOT / "configs" / "default.yaml"))
    raw = load_raw(cfg.data.source)
    flights = prepare_flights(raw.flights, cfg.problem.lead_time_hours, cfg.problem.delay_threshold_minutes)
    tables, _, _ = raw_batch(raw, flights, plan_windows(pd.Timestamp(as_of, tz="UTC"), cfg.window))
    return {name: suite_view(frame, load_suite_spec(name)) for name, frame in tables.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--as-of", default="2013-07-01")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

    frames = batch(args.as_of)
    defer_unused_imports()  # as in the flow's validation process
    import great_expectations  # noqa: F401 - imported once, before anything is timed

    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            f: (lambda f=f: all(r.success for r in validate_frames(frames, Path(tmp), result_format=f)))
            for f in FORMATS
        }
        variants["validate_frames"] = lambda: all(r.success for r in validate_frames(frames, Path(tmp)))
        times: dict[str, list[float]] = {k: [] for k in variants}
        for k, fn in variants.items():  # warm-up: GX's lazy first-use costs are paid once per process
            assert fn(), f"{k}: the raw batch of {args.as_of} failed its suites"
        for _ in range(args.repeat):
            for k, fn in variants.items():
                c = cpu()
                fn()
                times[k].append(cpu() - c)

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    print(
        f"raw batch for --as-of {args.as_of}: " + ", ".join(f"{n} {len(f):,} x {f.shape[1]}" for n, f in frames.items())
    )
    print(f"{'variant':18s} {'median CPU s':>12s} {'min':>7s} {'max':>7s}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:18s} {med[k]:12.3f} {min(v):7.3f} {max(v):7.3f}")
    print(f"ratio validate_frames / SUMMARY = {med['validate_frames'] / med['SUMMARY']:.2f}")


if __name__ == "__main__":
    main()
