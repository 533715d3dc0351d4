"""The helper process the training flow hands its MLflow work to: a real child Python process."""

from __future__ import annotations

import os
import signal
import time

import pytest

from evergreen.worker import WorkerProcess, keep, kept


def niceness() -> int:
    return os.nice(0)


def pid() -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def add_kept(key: str, x: int) -> int:
    return int(kept(key)) + x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def unpicklable_result() -> object:
    return lambda: None


def test_jobs_run_in_order_in_another_process_and_share_what_they_keep() -> None:
    with WorkerProcess("test", nice=0) as w:
        futures = [w.submit(keep, "base", 40), w.submit(add_kept, "base", 2), w.submit(pid)]
        assert futures[0].result(timeout=60) is None
        assert futures[1].result(timeout=60) == 42
        assert futures[2].result(timeout=60) != os.getpid()


def test_submit_returns_before_the_job_runs() -> None:
    with WorkerProcess("test") as w:
        slow = w.submit(nap, 1.0)
        assert not slow.done()  # returned while the child sleeps
        assert slow.result(timeout=60) == 1.0


def test_the_child_runs_at_the_priority_asked_for() -> None:
    with WorkerProcess("test", nice=19) as w:
        assert w.submit(niceness).result(timeout=60) == max(19, os.nice(0))


def test_a_failing_job_raises_here_with_the_childs_traceback_and_later_jobs_still_run() -> None:
    with WorkerProcess("tracking") as w:
        bad = w.submit(fail, "no such run")
        missing = w.submit(add_kept, "never-kept", 1)
        after = w.submit(pid)
        with pytest.raises(ValueError, match="no such run") as info:
            bad.result(timeout=60)
        assert any("raised in the tracking process" in n and "in fail" in n for n in info.value.__notes__)
        with pytest.raises(KeyError, match="never-kept"):
            missing.result(timeout=60)
        assert after.result(timeout=60) > 0


def test_a_result_that_cannot_cross_the_pipe_is_an_error_not_a_hang() -> None:
    with WorkerProcess("test") as w:
        with pytest.raises(Exception, match="pickle|lambda"):
            w.submit(unpicklable_result).result(timeout=60)
        assert w.submit(pid).result(timeout=60) > 0


def test_a_child_that_dies_fails_every_pending_job_with_a_clear_error() -> None:
    # A real kill: the fault a crash in native code (or the OOM killer) would cause.
    w = WorkerProcess("tracking")
    child = w.submit(pid).result(timeout=60)
    pending = [w.submit(nap, 30), w.submit(pid)]
    os.kill(child, signal.SIGKILL)
    for f in pending:
        with pytest.raises(RuntimeError, match=r"tracking process .* exit code -9"):
            f.result(timeout=60)
    with pytest.raises(RuntimeError, match="exit code -9"):
        w.submit(pid).result(timeout=5)
    w.close()
