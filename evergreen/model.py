"""The deployable model: a LightGBM booster plus the column order and category vocabulary it needs.

Logged as an MLflow pyfunc whose ``predict`` takes the raw feature frame (strings for categoricals,
as Feast and the request return them) and returns the probability of the label: the same call works
for the gate, the drift flow and a serving gateway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModelContext

from evergreen.features import to_model_frame

BOOSTER_FILE = "booster.txt"
META_FILE = "model_meta.json"


class BoosterModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    def __init__(self) -> None:
        self.booster: lgb.Booster | None = None
        self.columns: list[str] = []
        self.categories: dict[str, list[str]] = {}

    def load_context(self, context: PythonModelContext) -> None:
        self.booster = lgb.Booster(model_file=context.artifacts["booster"])
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.columns = meta["columns"]
        self.categories = meta["categories"]

    # A DataFrame hint is one MLflow infers no schema from: the schema is the signature logged with the model.
    def predict(
        self, context: PythonModelContext | None, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"model input lacks feature column(s) {missing}")
        assert self.booster is not None, "load_context() sets the booster"
        x = to_model_frame(frame, self.columns, self.categories)
        return np.asarray(self.booster.predict(x), dtype="float64")


def save_model_files(
    booster: Any, columns: list[str], categories: dict[str, list[str]], folder: Path
) -> dict[str, str]:
    """Write the booster and its metadata; returns the MLflow ``artifacts`` mapping."""
    folder.mkdir(parents=True, exist_ok=True)
    booster_path = folder / BOOSTER_FILE
    booster.save_model(str(booster_path))
    meta_path = folder / META_FILE
    meta_path.write_text(json.dumps({"columns": columns, "categories": categories}, indent=1))
    return {"booster": str(booster_path), "meta": str(meta_path)}
