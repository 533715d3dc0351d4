"""Shared flow-test fixtures: one Prefect test server, one feature build per example and session.

``env`` is the flights example (tests of its own features, the rollout, the point-in-time world);
``example_env`` runs a test once per example, so the machinery cannot quietly become single-problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prefect.testing.utilities import prefect_test_harness

from evergreen.config import load_config
from tests.conftest import write_config

SMALL = {
    "window": {"train_days": 45, "holdout_days": 7, "validation_days": 7},
    "tuning": {"n_trials": 3, "timeout_seconds": 900, "max_boost_rounds": 200},
    "gate": {"n_bootstrap": 200},
    "registry": {"reference_sample_rows": 2000},
}


@dataclass(frozen=True)
class Example:
    """What the flow tests need to know about an example beyond its config."""

    first_as_of: str  # the cold start
    second_as_of: str  # a month later: gated against the first
    drift_as_of: tuple[str, str]  # a window inside the first model's training period, one long after it
    corrupt: tuple[str, str, float]  # table, numeric column, a value its raw suite rejects
    sections: dict  # small windows and budgets for tests


EXAMPLES = {
    "flights": Example(
        "2013-04-01", "2013-05-01", ("2013-03-10", "2013-12-20"), ("flights", "arr_delay", 99999.0), SMALL
    ),
    "dot2015": Example(
        "2015-05-01",
        "2015-06-01",
        ("2015-04-10", "2015-10-15"),
        ("flights", "DEPARTURE_DELAY", 99999.0),
        {k: v for k, v in SMALL.items() if k != "window"},  # its own windows: ~275 flights a day
    ),
}


@pytest.fixture(scope="session")
def harness():
    with prefect_test_harness(server_startup_timeout=60):
        yield


def build(tmp_path_factory, example: str) -> dict:
    tmp = tmp_path_factory.mktemp(f"loop-{example}")
    spec = EXAMPLES[example]
    path = write_config(tmp / "config.yaml", tmp / "home", example, **spec.sections)
    cfg = load_config(path)
    from flows.features import features

    built = features(config=str(path))
    return {"name": example, "example": spec, "path": str(path), "cfg": cfg, "tmp": tmp, "features": built}


@pytest.fixture(scope="session")
def env(tmp_path_factory, harness):
    return build(tmp_path_factory, "flights")


@pytest.fixture(scope="session", params=list(EXAMPLES))
def example_env(request, tmp_path_factory, harness):
    if request.param == "flights":
        return request.getfixturevalue("env")
    return build(tmp_path_factory, request.param)
