"""Evergreen's Prefect flows. Every flow module imports this package (through ``flows.shell``), so it
prepares the process before anything imports Feast: see evergreen/lazy_typecheck.py."""

from evergreen import lazy_typecheck

lazy_typecheck.install()
