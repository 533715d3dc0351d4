"""The collector policy of a run: paused, then the built heap frozen, then everything handed back."""

from __future__ import annotations

import gc
import weakref

import pytest

from evergreen.gcpolicy import hold_collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def collector_restored():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    gc.enable() if enabled else gc.disable()


def test_the_pause_holds_cycles_settle_freezes_them_and_the_end_hands_them_back():
    gc.enable()
    with hold_collector() as collector:
        assert not gc.isenabled()
        cycle = weakref.ref(Node())
        kept = [[] for _ in range(50_000)]  # far past generation 0's threshold: a running collector would run
        assert cycle() is not None
        del kept
        collector.settle()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert cycle() is not None, "a frozen cycle is out of the collector's reach"
        collector.settle()  # a second call changes nothing
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert cycle() is None, "after the run the collector reclaims what was frozen"


def test_an_error_restores_the_collector():
    gc.enable()
    with pytest.raises(RuntimeError), hold_collector():
        raise RuntimeError("boom")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_collector_switched_off_by_the_caller_stays_off():
    gc.disable()
    with hold_collector() as collector:
        collector.settle()
        assert not gc.isenabled()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0
