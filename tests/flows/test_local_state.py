"""A flow run from a shell keeps all its state in Evergreen's home.

One real features run (the DOT 2015 example without the online backfill: about 30 s) as a user's
shell starts it: a subprocess with an empty HOME, no PREFECT_HOME, and EVERGREEN_HOME naming a fresh
home.
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


@dataclass(frozen=True)
class Built:
    user_home: Path  # HOME of the shell that ran the flow
    home: Path  # EVERGREEN_HOME
    env: dict[str, str]


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
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    env.update(HOME=str(user_home), EVERGREEN_HOME=str(home))
    config = str(example_config("dot2015"))
    res = _run([sys.executable, "-m", "flows.features", "--config", config, "--no-materialize"], env, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return Built(user_home, home, env)


def test_a_flow_keeps_prefect_state_in_the_evergreen_home(built: Built) -> None:
    assert list(built.user_home.iterdir()) == [], "the flow wrote into the user's HOME (~/.prefect?)"
    # The temporary server's database: Prefect ran with its home in Evergreen's.
    assert (built.home / "prefect" / "prefect.db").is_file()
