"""``evergreen init NAME``: a new problem folder to fill in, as ``feast init`` writes a feature repo.

The folder holds what a problem is made of: its module (``problem.py``), its config, its Feast repo
and its GX suites. As written it is a working baseline for one table of labelled events.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from string import Template

from evergreen.config import ROOT

TEMPLATES = Path(__file__).resolve().parent / "templates" / "problem"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def init_problem(name: str, parent: Path) -> Path:
    """Write ``parent/name/`` from the templates; refuses a bad name or an existing folder."""
    if not NAME.match(name):
        raise ValueError(f"problem name {name!r}: use lower case letters, digits and _ (a Python and Feast name)")
    target = parent / name
    if target.exists():
        raise FileExistsError(f"{target} already exists: pick another name or remove it")
    home = ROOT / ".evergreen"
    values = {
        "name": name,
        "class_name": "".join(part.capitalize() for part in name.split("_")),
        "upper": name.upper(),
        "dashed": name.replace("_", "-"),
        "folder": os.path.relpath(target, Path.cwd()),
        "home": os.path.relpath(home, target),
    }
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        out = target / template.relative_to(TEMPLATES).with_suffix("")
        out.parent.mkdir(parents=True, exist_ok=True)
        # safe_substitute: ${VAR:-default} of the config's environment expansion stays as written.
        out.write_text(Template(template.read_text()).safe_substitute(values))
    (target / "data").mkdir()
    return target
