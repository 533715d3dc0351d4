"""Shared flow-test fixtures: one Prefect test server and one feature build per session."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def harness():
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def env(tmp_path_factory, harness):
    tmp = tmp_path_factory.mktemp("loop")
    path = write_config(tmp / "config.yaml", tmp / "home", **SMALL)
    cfg = load_config(path)
    from flows.features import features

    built = features(config=str(path))
    return {"path": str(path), "cfg": cfg, "tmp": tmp, "features": built}
