"""The machinery stays problem-free: no name of either example may appear in the core packages.

Names come from the examples' own specs (tables, columns, entity id, label, request fields,
categoricals, feature services, Feast projects), plus the domain words behind them. A core that quietly
becomes single-problem again fails here, with the file, the line and the word.
"""

import re

import pytest

from tests.conftest import EXAMPLES, ROOT

CORE = ("evergreen", "tasks", "flows", "deployments")
# Spec names that are ordinary words of the machinery too (a model, a day, a type).
GENERIC = {
    *("year", "month", "day", "hour", "minute", "type", "model", "engine", "engines", "seats", "manufacturer"),
    *("dest", "temp", "date"),  # argparse's dest=, temp files, dates
    "cancelled",  # a Prefect state (prefect.flow-run.Cancelled)
}
DOMAIN_WORDS = {"flight", "flights", "airline", "airport", "aircraft", "plane", "planes", "delay", "delayed"}
SPEC_FILES = sorted(EXAMPLES.glob("*/config.yaml"))


def domain_names() -> set[str]:
    from evergreen.config import load_config

    names = set(DOMAIN_WORDS)
    for path in SPEC_FILES:
        cfg = load_config(path)
        p = cfg.problem
        names |= {p.name, p.entity_id, p.label, cfg.features.feature_service, cfg.features.project}
        names |= set(p.request) | set(p.categorical) | set(p.request_features) | set(p.tables)
        names |= {c for t in p.tables.values() for c in t.columns} | set(cfg.drift.key_features)
    return {n for n in names if n.lower() not in GENERIC and len(n) > 2}


def test_both_examples_are_read():
    assert {p.parent.name for p in SPEC_FILES} >= {"flights", "dot2015"}


def test_no_example_name_appears_in_the_core():
    names = domain_names()
    pattern = re.compile(
        r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b",
        re.I,
    )
    hits = []
    for package in CORE:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for m in pattern.finditer(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {m.group(0)!r} in {line.strip()[:100]}")
    assert not hits, "example names in the core:\n" + "\n".join(hits)


@pytest.mark.parametrize("word", ["flights", "tailnum", "AIRLINE"])
def test_the_check_can_fail(word):
    assert word.lower() in {n.lower() for n in domain_names()}
