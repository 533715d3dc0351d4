"""The README's install line for a system Python that refuses pip installs (PEP 668), on a fresh clone.

    python3 -m venv ~/.uv && ~/.uv/bin/pip install uv && ~/.uv/bin/uv run --frozen python -m flows.main

It runs for real in a clone of the committed HEAD, with HOME an empty folder: a venv for uv, pip
installing uv from PyPI, `uv run --frozen` installing the environment from the lock, and then, in
place of the main job (minutes, tested elsewhere), its `--help`, which imports every flow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> str:
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (
        f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    return res.stdout


def test_readme_install_line_on_a_fresh_clone(tmp_path: Path) -> None:
    home, clone = tmp_path / "home", tmp_path / "evergreen"
    home.mkdir()
    head = _run(["git", "rev-parse", "HEAD"], dict(os.environ), ROOT).strip()
    _run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], dict(os.environ), tmp_path)
    _run(["git", "checkout", "--quiet", head], dict(os.environ), clone)

    # A user's shell: their HOME, a plain PATH whose python3 is this test's base interpreter (a
    # system Python 3.11, not a venv's), nothing of this test session's virtualenv or Prefect home.
    base_bin = Path(sys.base_prefix) / "bin"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "VIRTUAL_ENV", "PYTHON", "PREFECT_", "EVERGREEN_", "PYENV"))
    }
    env.update(HOME=str(home), PATH=f"{base_bin}:/usr/local/bin:/usr/bin:/bin")
    # Installs from this machine's uv cache, so the lock's ~1 GB of wheels is not downloaded again
    # (pip still fetches uv itself from PyPI). Without a uv here, the fresh HOME's own cache fills.
    real_uv = shutil.which("uv")
    if os.environ.get("UV_CACHE_DIR"):
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    elif real_uv is not None:
        env["UV_CACHE_DIR"] = _run([real_uv, "cache", "dir"], dict(os.environ), ROOT).strip()

    # The README's line as written, run by a shell (which expands ~ to this HOME), with `--help` added
    # to the main job: `uv run` installs the environment from the lock, then the job's entry point
    # only parses its arguments (importing Prefect, Feast and every flow) instead of running.
    line = next(
        (s.strip() for s in (clone / "README.md").read_text().splitlines() if s.startswith("python3 -m venv ~/.uv")),
        None,
    )
    assert line is not None, "README.md lost its install line for a PEP 668 system (python3 -m venv ~/.uv ...)"
    assert line.endswith("python -m flows.main"), line
    t0 = time.monotonic()
    out = _run(["bash", "-c", f"{line} --help"], env, clone)
    installed = time.monotonic() - t0
    assert "usage: python -m flows.main" in out, out

    uv = str(home / ".uv" / "bin" / "uv")
    assert "Feast's CLI" in _run([uv, "run", "--frozen", "evergreen", "--help"], env, clone)
    assert (clone / ".venv" / "bin" / "feast").exists()
    # Its Prefect home is the clone's (.evergreen/prefect), never the user's HOME.
    assert (clone / ".evergreen" / "prefect").is_dir()
    assert sorted(p.name for p in home.iterdir()) in (
        [".uv"],
        [".cache", ".uv"],  # pip's own cache of the uv wheel
    ), sorted(p.name for p in home.iterdir())
    print(f"\nREADME install line on a fresh clone: {installed:.1f} s, total {time.monotonic() - t0:.1f} s")
