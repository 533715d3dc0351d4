"""The main job on the embedded default: features -> Feast apply/materialise -> training flow(s).

``python -m flows.main`` trains at the config's ``problem.main_as_of`` dates (typically a cold start
that makes the first champion, then a challenger gated against it) and prints where to look next.
``--config examples/<name>/config.yaml`` runs another problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from evergreen.config import DEFAULT_CONFIG, load_config
from flows.features import features
from flows.shell import run_flow
from flows.training import training


def report(cfg_path: str, runs: list[dict[str, Any]]) -> str:
    cfg = load_config(cfg_path)
    last = runs[-1]
    lines = ["", "=" * 78, "Evergreen: main job finished", "=" * 78]
    for r in runs:
        lines.append(
            f"as_of {r['as_of'][:10]}: version {r['version']} gate {r['gate'].upper()} "
            f"(holdout ROC AUC {r['holdout']['roc_auc']:.4f}, {r['train_rows']} training rows)"
        )
        lines += [f"    {reason}" for reason in r["gate_reasons"]]
        lines.append(f"    tuning: {r['tuning']}")
    lines += [
        "",
        f"champion: {last['model_name']} v{last['champion']}  (load it as models:/{last['model_name']}@champion)",
        f"decision record: {last['decision_record']}",
        f"its picture:     {Path(last['decision_record']).with_suffix('.png')}",
        "",
        "Look closer:",
        f"  MLflow UI:  uv run mlflow ui --backend-store-uri {cfg.tracking_uri} --port 5000",
        "              then open http://127.0.0.1:5000",
        f"  Prefect UI: PREFECT_HOME={os.environ['PREFECT_HOME']} uv run prefect server start",
        "              then open http://127.0.0.1:4200",
        "  Roll back:  uv run evergreen rollback --reason 'why'",
        "  History:    uv run evergreen history",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m flows.main", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument(
        "--as-of",
        type=datetime.fromisoformat,
        action="append",
        default=None,
        help="repeatable (default: the config's problem.main_as_of)",
    )
    p.add_argument("--n-trials", type=int, default=None, help="override tuning.n_trials")
    args = p.parse_args(argv)

    def job() -> list[dict[str, Any]]:
        dates: list[datetime | None] = [*(args.as_of or load_config(args.config).problem.main_as_of)] or [None]
        features(config=args.config)
        return [training(config=args.config, as_of=a, n_trials=args.n_trials, reason="manual") for a in dates]

    return run_flow(job, lambda runs: report(args.config, runs))


if __name__ == "__main__":
    sys.exit(main())
