"""Shared wiring for tasks: stage timing and artifact helpers."""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger


@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    """Time one stage of a flow body into ``timings`` and log its start and duration."""
    logger = get_run_logger()
    logger.info("stage %s: started", name)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - t0, 3)
        logger.info("stage %s: %.2f s", name, timings[name])


def prewarm(*steps: str | Callable[[], object]) -> threading.Thread:
    """Import heavy modules (names) and run warm-up calls (callables) on a daemon thread while the
    caller's thread runs native code that releases the GIL (LightGBM, DuckDB): their cost then takes
    no wall time where they are used. Join the thread before using what it warms."""

    def run() -> None:
        for step in steps:
            try:
                importlib.import_module(step) if isinstance(step, str) else step()
            except Exception:  # noqa: S112 - the real call later reports any error where it matters
                continue

    t = threading.Thread(target=run, name="prewarm", daemon=True)
    t.start()
    return t


def flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def table_artifact(rows: list[dict[str, Any]], key: str, description: str) -> None:
    create_table_artifact([{k: _clean(v) for k, v in r.items()} for r in rows], key=key, description=description)


def markdown_artifact(markdown: str, key: str, description: str) -> None:
    create_markdown_artifact(markdown, key=key, description=description)
