"""Evergreen's Prefect flows. Every flow module imports this package (through ``flows.shell``), so it
prepares the process before anything imports Prefect or Feast: Prefect's home exists (importing
``evergreen`` has defaulted PREFECT_HOME to ``<home>/prefect``), see evergreen/lazy_typecheck.py."""

import os
from pathlib import Path

from evergreen import lazy_typecheck

# Prefect creates its home when imported, but not the folders above it, which a fresh home lacks.
try:
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
except OSError:
    pass  # unwritable: Prefect itself warns that it cannot create its home

lazy_typecheck.install()
