"""Python's cyclic garbage collector, held back while a run builds its long-lived heap.

A training run imports Prefect, MLflow, Feast and their dependencies and loads its data: some 450,000
tracked objects that live as long as the process. While that heap grows, CPython keeps running full
collections over all of it (nine of them, 1.5 s in all, in a training flow process), which find almost
nothing: about 10,000 unreachable objects and no memory given back. The run pauses the collector for
that phase, then freezes what it built (``gc.freeze``: later collections skip those objects) and lets
the collector run again over what is allocated afterwards. At the end everything frozen is handed
back to the collector, so a long-lived process (a served flow, the test suite) reclaims it as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


class HeldCollector:
    """Handle of :func:`hold_collector`: ``settle()`` ends the pause (at most once)."""

    def __init__(self, was_enabled: bool) -> None:
        self.was_enabled = was_enabled
        self.settled = False

    def settle(self) -> None:
        """Freeze the heap built so far and let the collector run again over newer objects."""
        if self.settled:
            return
        self.settled = True
        gc.freeze()
        if self.was_enabled:
            gc.enable()


@contextmanager
def hold_collector() -> Iterator[HeldCollector]:
    """Pause the cyclic collector until ``settle()`` (or the end of the block); on exit, hand every
    frozen object back to it and restore the collector's previous on/off state.

    Objects are still freed by reference counting throughout; only reference cycles wait."""
    held = HeldCollector(gc.isenabled())
    gc.disable()
    try:
        yield held
    finally:
        if held.settled:
            gc.unfreeze()
        if held.was_enabled:
            gc.enable()
