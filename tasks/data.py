"""Data stage: load the raw tables and derive the prepared flights frame."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from evergreen.config import EvergreenConfig
from evergreen.data import RawData, load_raw, prepare_flights


@task(name="load-raw-data", cache_policy=NONE)
def load_raw_data(cfg: EvergreenConfig) -> RawData:
    return load_raw(cfg.data.source)


@task(name="prepare-flights", cache_policy=NONE)
def prepare(cfg: EvergreenConfig, raw: RawData) -> pd.DataFrame:
    return prepare_flights(raw.flights, cfg.problem.lead_time_hours, cfg.problem.delay_threshold_minutes)
