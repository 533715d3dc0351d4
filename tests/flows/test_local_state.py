"""A flow run from a shell keeps all its state in Evergreen's home, and Feast's CLI reads that home.

One real features run (the DOT 2015 example: about 30 s) as a user's shell starts it: a subprocess
with an empty HOME, no PREFECT_HOME, Prefect's default log level, and EVERGREEN_HOME naming a fresh
home. Its result is then read with the real `feast` CLI, through `evergreen feast` and by hand, and
its console output is read as a user reads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, example_config

pytestmark = pytest.mark.slow

FEAST_REPO = ROOT / "examples" / "dot2015" / "feature_repo"


@dataclass(frozen=True)
class Built:
    user_home: Path  # HOME of the shell that ran the flow
    home: Path  # EVERGREEN_HOME
    env: dict[str, str]
    console: str  # what the run printed, stdout and stderr


def _run(
    argv: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("local-state")
    user_home, home = tmp / "user", tmp / "evergreen-home"
    user_home.mkdir()
    # tests/conftest.py gives this session a temporary PREFECT_HOME: the user's shell has none.
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_LOGGING_LEVEL")}
    env.update(HOME=str(user_home), EVERGREEN_HOME=str(home))
    config = str(example_config("dot2015"))
    res = _run([sys.executable, "-m", "flows.features", "--config", config], env, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return Built(user_home, home, env, res.stdout + res.stderr)


def test_the_console_has_no_colour_codes_and_no_line_per_finished_task(built: Built) -> None:
    assert "stage publish:" in built.console and "materialised airline_stats" in built.console  # INFO is shown
    assert "\x1b[" not in built.console  # Feast's coloured progress is not passed through
    lines = built.console.splitlines()
    assert any("Task run" in line for line in lines)  # task runs do log...
    assert not [line for line in lines if "Task run" in line and "Finished in state Completed()" in line]  # ...not done
    assert sum("Flow run" in line and "Finished in state Completed()" in line for line in lines) == 1


def test_a_flow_keeps_prefect_state_in_the_evergreen_home(built: Built) -> None:
    assert list(built.user_home.iterdir()) == [], "the flow wrote into the user's HOME (~/.prefect?)"
    # The temporary server's database: Prefect ran with its home in Evergreen's.
    assert (built.home / "prefect" / "prefect.db").is_file()


def test_evergreen_feast_reads_the_published_snapshot(built: Built) -> None:
    argv = [sys.executable, "-m", "evergreen.cli", "--config", str(example_config("dot2015")), "feast", "--"]
    res = _run([*argv, "feature-views", "list"], built.env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "airline_stats" in res.stdout

    # A home the features flow never wrote: refused with the command that builds it, nothing created.
    empty = built.user_home.parent / "never-built"
    res = _run([*argv, "feature-views", "list"], {**built.env, "EVERGREEN_HOME": str(empty)})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no published Feast snapshot" in res.stderr and "flows.features" in res.stderr
    assert not empty.exists()


def test_plain_feast_in_the_repo_follows_evergreen_home_or_fails(built: Built) -> None:
    before = sorted(p.name for p in FEAST_REPO.iterdir())
    feast = [sys.executable, "-m", "feast.cli.cli"]

    res = _run([*feast, "feature-views", "list"], built.env, cwd=FEAST_REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "airline_stats" in res.stdout

    # EVERGREEN_HOME unset: an error naming it, never a new empty home beside the repo.
    unset = {k: v for k, v in built.env.items() if k not in ("EVERGREEN_HOME", "EVERGREEN_FEATURE_DIR")}
    res = _run([*feast, "plan"], unset, cwd=FEAST_REPO)
    assert res.returncode != 0
    assert "EVERGREEN_HOME is not set" in res.stderr and "evergreen" in res.stderr
    res = _run([*feast, "feature-views", "list"], unset, cwd=FEAST_REPO)
    assert res.returncode != 0
    assert "${EVERGREEN_HOME}" in res.stderr
    assert sorted(p.name for p in FEAST_REPO.iterdir() if p.name != "__pycache__") == [
        n for n in before if n != "__pycache__"
    ]
