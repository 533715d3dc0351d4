"""Shared wiring for tasks and flows: stage timing, the flow run id and artifact helpers."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger

from evergreen import registry
from evergreen.config import EvergreenConfig

P = ParamSpec("P")
R = TypeVar("R")


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


@contextmanager
def one_at_a_time(name: str) -> Iterator[None]:
    """Hold the only slot of Prefect's global concurrency limit ``name`` (created with one slot if
    missing): every process reporting to the same Prefect server waits its turn, whichever machine."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit=1)
    with concurrency(name, occupy=1, strict=True):
        yield


def talks_to_tracking(
    fn: Callable[Concatenate[EvergreenConfig, P], R],
) -> Callable[Concatenate[EvergreenConfig, P], R]:
    """For a task whose first argument is the config: its failure while the tracking server is down
    is reported as that (``registry.TrackingUnavailable``, one line), not as MLflow's last retry."""

    @functools.wraps(fn)
    def wrapper(cfg: EvergreenConfig, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with registry.tracking_errors(cfg.tracking_uri):
            return fn(cfg, *args, **kwargs)

    return wrapper


def flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


def _json_cell(v: Any) -> Any:
    """A table artifact cell as JSON allows it: NaN and infinities become empty cells."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def table_artifact(rows: list[dict[str, Any]], key: str, description: str) -> None:
    create_table_artifact([{k: _json_cell(v) for k, v in r.items()} for r in rows], key=key, description=description)


def markdown_artifact(markdown: str, key: str, description: str) -> None:
    create_markdown_artifact(markdown, key=key, description=description)
