"""No library calls out to its vendor from a flow: the quiet defaults are in place before any is imported.

Each check runs in a fresh interpreter whose environment has none of the variables involved and no
CI markers (MLflow turns its telemetry off by itself when it sees pytest or a CI), so what is measured
is what a user's shell gets.
"""

from __future__ import annotations

import os
import subprocess
import sys

from evergreen import QUIET_DEFAULTS
from tests.conftest import ROOT

CI_MARKERS = (
    "PYTEST_CURRENT_TEST",
    "GITHUB_ACTIONS",
    "CI",
    "CIRCLECI",
    "GITLAB_CI",
    "JENKINS_URL",
    "TRAVIS",
    "TF_BUILD",
)


# The controls import Prefect and MLflow with their reporting on: every HTTP(S) request of the child
# goes to a closed local port, so none of it can leave the machine.
NOWHERE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9"}
PROXY_VARS = {*NOWHERE, *(k.lower() for k in NOWHERE), "NO_PROXY", "no_proxy"}


def _run(code: str, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {*QUIET_DEFAULTS, *CI_MARKERS, *PROXY_VARS}}
    env.update(NOWHERE, **{k.lower(): v for k, v in NOWHERE.items()}, **extra)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


TELEMETRY = "from mlflow.telemetry.utils import is_telemetry_disabled; print(is_telemetry_disabled())"
PREFECT_SDK = "from prefect._internal.analytics.enabled import is_telemetry_enabled; print(is_telemetry_enabled())"


def test_mlflow_and_prefect_report_usage_unless_told_not_to() -> None:
    # The controls: without Evergreen's defaults both are on, so the checks below can fail.
    assert _run(TELEMETRY) == "False"
    assert _run(PREFECT_SDK) == "True"


def test_flows_and_tasks_turn_every_call_out_off() -> None:
    for package in ("flows", "tasks"):
        assert _run(f"import {package}; {TELEMETRY}") == "True", package
        assert _run(f"import {package}; {PREFECT_SDK}") == "False", package
        seen = _run(f"import os, {package}; print(sorted(k for k in {sorted(QUIET_DEFAULTS)!r} if k in os.environ))")
        assert seen == str(sorted(QUIET_DEFAULTS)), package


def test_a_users_own_setting_wins() -> None:
    assert _run(f"import flows; {TELEMETRY}", MLFLOW_DISABLE_TELEMETRY="false", DO_NOT_TRACK="false") == "False"
