"""``evergreen``: a new problem folder, and registry commands for operators.

uv run evergreen init churn                # examples/churn/: module, config, Feast repo, suites
uv run evergreen learn-suites              # expectations/learned/: null shares and value sets of the data
uv run evergreen status
uv run evergreen history
uv run evergreen rollback --reason "canary errors"
uv run evergreen promote --version 3 --reason "manual override"
uv run evergreen feast -- feature-views list   # Feast's CLI on the published features of the config's home
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from evergreen import contracts, feature_store, lazy_typecheck, registry
from evergreen.config import DEFAULT_CONFIG, ROOT, ConfigError, load_config
from evergreen.problem import DataError
from evergreen.scaffold import init_problem


def main(argv: list[str] | None = None) -> int:
    lazy_typecheck.install()  # an MLflow client over HTTP loads Feast's plugin
    p = argparse.ArgumentParser(
        prog="evergreen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=DEFAULT_CONFIG)
    sub = p.add_subparsers(dest="command", required=True)
    ini = sub.add_parser("init", help="write a new problem folder to fill in (module, config, Feast repo, suites)")
    ini.add_argument("name", help="the problem's name: lower case letters, digits and _")
    ini.add_argument("--dir", type=Path, default=ROOT / "examples", help="parent folder (default: examples/)")
    ls = sub.add_parser(
        "learn-suites",
        help="write expectations/learned/*.json from the data: each column's present share, each categorical's values",
    )
    ls.add_argument("--start", type=_instant, default=None, help="reference start (default: the data's first)")
    ls.add_argument("--end", type=_instant, default=None, help="reference end, excluded (default: the data's last)")
    ls.add_argument("--null-tolerance", type=float, default=contracts.NULL_TOLERANCE)
    ls.add_argument("--category-tolerance", type=float, default=contracts.CATEGORY_TOLERANCE)
    sub.add_parser("status", help="show the aliases of the registered model")
    sub.add_parser("history", help="show every recorded alias move")
    rb = sub.add_parser("rollback", help="move champion back to previous_champion")
    rb.add_argument("--reason", required=True)
    pr = sub.add_parser("promote", help="make a version champion (the old one becomes previous_champion)")
    pr.add_argument("--version", required=True)
    pr.add_argument("--reason", required=True)
    fe = sub.add_parser(
        "feast",
        help="run Feast's CLI on the published feature snapshot of the config's home: evergreen feast -- <feast args>",
    )
    fe.add_argument("feast_args", nargs=argparse.REMAINDER, help="Feast's own arguments, after --")
    args = p.parse_args(argv)
    if args.command == "feast":
        return feast(args)
    if args.command == "init":
        try:
            target = init_problem(args.name, args.dir)
        except (ValueError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {target}: put events.csv in {target / 'data'}, adapt problem.py and config.yaml, then run")
        print(f"  python -m flows.main --config {target / 'config.yaml'}")
        return 0
    if args.command == "learn-suites":
        return learn(args)
    try:
        cfg = load_config(args.config)
        name = cfg.registry.model_name
        c = registry.client(cfg.tracking_uri)
        if args.command == "status":
            al = registry.aliases(c, name)
            if not al:
                print(f"{name}: no aliases yet (run the training flow first)")
            for alias, version in sorted(al.items()):
                print(f"{alias:>18}  v{version}")
        elif args.command == "history":
            for m in registry.history(c, name):
                print(
                    f"{m.at}  {m.alias:<17} v{m.from_version or '-'} -> v{m.to_version or '-'}  by {m.actor}"
                    f"{' (flow run ' + m.flow_run + ')' if m.flow_run else ''}: {m.reason}"
                )
        elif args.command == "rollback":
            frm, to = registry.rollback(c, name, args.reason)
            print(f"{name}: champion rolled back v{frm} -> v{to}")
        elif args.command == "promote":
            if args.version not in {str(v.version) for v in c.search_model_versions(f"name='{name}'")}:
                raise registry.RegistryError(f"model '{name}' has no version {args.version}")
            old = registry.promote(c, name, args.version, f"manual: {args.reason}", None)
            print(f"{name}: champion v{old or '-'} -> v{args.version}")
    except (ConfigError, registry.RegistryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _instant(text: str) -> pd.Timestamp:
    t = pd.Timestamp(text)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def learn(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        suites = contracts.learn_suites(cfg, args.start, args.end, args.null_tolerance, args.category_tolerance)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for (name, suite), path in zip(suites.items(), contracts.write_suites(suites, cfg.suites_dir), strict=True):
        print(f"wrote {path}: {len(suite['expectations'])} expectations for {name}")
    return 0


def feast(args: argparse.Namespace) -> int:
    feast_args = args.feast_args[1:] if args.feast_args[:1] == ["--"] else args.feast_args
    try:
        return feature_store.feast_cli(load_config(args.config), feast_args or ["--help"])
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
