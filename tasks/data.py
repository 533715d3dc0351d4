"""Data stage: load the problem's raw tables and derive its labelled entity frame."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from evergreen.config import EvergreenConfig
from evergreen.problem import RawData, check_batch, load_problem, prepare_checked
from evergreen.training import Windows, batch_range


@task(name="load-raw-data", cache_policy=NONE)
def load_raw_data(cfg: EvergreenConfig) -> RawData:
    return load_problem(cfg).load_tables(cfg.data.source)


@task(name="prepare-entities", cache_policy=NONE)
def prepare(cfg: EvergreenConfig, raw: RawData) -> pd.DataFrame:
    """One labelled row per prediction request, checked against the problem spec."""
    return prepare_checked(cfg, raw)


@task(name="cut-raw-batch", cache_policy=NONE)
def cut_batch(
    cfg: EvergreenConfig, raw: RawData, windows: Windows
) -> tuple[dict[str, pd.DataFrame], pd.Timestamp, pd.Timestamp]:
    """The raw rows a run on ``windows`` reads (its windows and feature lookback), with their range."""
    lo, hi = batch_range(windows, cfg.problem)
    batch = load_problem(cfg).raw_batch(raw, lo, hi)
    check_batch(batch, raw, cfg.problem, lo, hi)
    return batch, lo, hi
