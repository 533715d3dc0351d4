"""The plug-in a team writes for its own problem: one module, one ``Problem`` subclass.

The config's ``problem:`` spec names the tables, columns, label, request features and slices; the
module says how to read and label the data and how to compute the feature tables. Everything else
(validation, point-in-time retrieval, tuning, gate, registry, drift, rollout, replay, serving) reads
names from the spec. Each folder of ``examples/`` holds a complete implementation; ``evergreen init
NAME`` writes a skeleton to fill in.

What a subclass must write:

* ``prepare(tables)``: the labelled entity frame, one row per prediction request, with the spec's
  entity id, prediction time, known-at instant, label, request features, slices and the Feast join keys;
* ``build_feature_tables(tables, prepared, computed_at)``: one frame per Feast feature view, each row
  stamped ``event_timestamp`` = the instant its values became known (and ``created`` = computed_at).

What it may override: ``locate`` (a named source such as an installed package's data folder),
``load_tables`` (another storage than files), ``raw_batch`` (another cut of a run's raw rows) and
``entity_rows`` (join keys a request does not carry as such, e.g. a route built from two airports).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from evergreen.config import ConfigError, EvergreenConfig, ProblemConfig, TableSpec

FILE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".csv.zip")


class DataError(ValueError):
    """Raw data that cannot be used; the message names the table, the file and what to do."""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class RawData:
    """The problem's raw tables as loaded, with the files they came from."""

    tables: dict[str, pd.DataFrame]
    files: dict[str, list[Path]]

    def __getitem__(self, table: str) -> pd.DataFrame:
        return self.tables[table]

    def fingerprint(self) -> str:
        """Content hash of every raw table: identifies exactly which data a model saw."""
        h = hashlib.sha256()
        for name in sorted(self.tables):
            h.update(name.encode())
            h.update(pd.util.hash_pandas_object(self.tables[name], index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]


def find_file(folder: Path, stem: str, table: str) -> Path:
    for suffix in FILE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(
        f"table '{table}': no file {stem}.parquet, {stem}.csv, {stem}.csv.gz or {stem}.csv.zip in {folder}; "
        f"put it there or point data.source at the folder that has it"
    )


def read_file(path: Path, table: str) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, na_values=["NA"], keep_default_na=True, low_memory=False)
    except Exception as e:  # a parser error names the file, not only the parser's view of it
        raise DataError(f"{path}: cannot read table '{table}': {e}") from e


class Problem:
    """Base class of a problem module's implementation (see the module docstring)."""

    # The problem's own settings (``problem.params`` in the config), validated strictly.
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, spec: ProblemConfig, config_file: Path | None = None):
        self.spec = spec
        try:
            self.params: Any = self.Params.model_validate(spec.params)
        except ValidationError as e:
            where = f"{config_file}: " if config_file else ""
            lines = [f"  problem.params.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
            raise ConfigError(f"{where}invalid problem parameters\n" + "\n".join(lines)) from None

    # --- what a problem must write -------------------------------------------------------------

    def prepare(self, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        """The labelled entity frame: one row per prediction request (vectorised, no row loops)."""
        raise NotImplementedError(f"{type(self).__name__}.prepare")

    def build_feature_tables(
        self, tables: dict[str, pd.DataFrame], prepared: pd.DataFrame, computed_at: pd.Timestamp
    ) -> dict[str, pd.DataFrame]:
        """One frame per Feast feature view, named like the view's parquet source."""
        raise NotImplementedError(f"{type(self).__name__}.build_feature_tables")

    # --- what a problem may override -------------------------------------------------------------

    def locate(self, source: str) -> Path:
        """The folder ``data.source`` names (an absolute path once the config is loaded)."""
        return Path(source)

    def load_tables(self, source: str) -> RawData:
        """Every table of the spec from the source folder, its files concatenated, columns checked."""
        folder = self.locate(source)
        if not folder.is_dir():
            raise DataError(
                f"data.source {source!r} is not a folder: point it at the folder with the tables "
                f"{sorted(self.spec.tables)}"
            )
        tables, files = {}, {}
        for name, table in self.spec.tables.items():
            paths = [find_file(folder, stem, name) for stem in table.files or [name]]
            frames = [check_columns(read_file(p, name), name, table, p) for p in paths]
            tables[name] = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            files[name] = paths
        return RawData(tables, files)

    def raw_batch(self, raw: RawData, lo: pd.Timestamp, hi: pd.Timestamp) -> dict[str, pd.DataFrame]:
        """The raw rows a run on [lo, hi) reads: rows of timed tables in the range, untimed tables whole."""
        out = {}
        for name, table in self.spec.tables.items():
            frame = raw[name]
            if table.time_column is None:
                out[name] = frame
                continue
            t = as_utc(frame[table.time_column], self.spec.time_zone)
            out[name] = frame[((t >= lo) & (t < hi)).to_numpy()]
        return out

    def entity_rows(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Serving: the request rows with every Feast join key (by default the request's own fields)."""
        return requests


def check_batch(
    batch: dict[str, pd.DataFrame], raw: RawData, spec: ProblemConfig, lo: pd.Timestamp, hi: pd.Timestamp
) -> None:
    """A run's raw batch has rows in every timed table, or the error says what the data covers."""
    for name, table in spec.tables.items():
        if table.time_column is None or not batch[name].empty:
            continue
        t = as_utc(raw[name][table.time_column], spec.time_zone)
        files = ", ".join(str(p) for p in raw.files.get(name, []))
        raise DataError(
            f"table '{name}' has no rows with {table.time_column} in [{lo:%Y-%m-%d %H:%M}, {hi:%Y-%m-%d %H:%M}) "
            f"UTC, the run's windows and feature lookback; its data cover {t.min():%Y-%m-%d} .. {t.max():%Y-%m-%d} "
            f"({files}): choose an as_of inside them or add the missing rows"
        )


def as_utc(values: pd.Series, time_zone: str) -> pd.Series:
    """Instants as UTC: aware values are converted, naive ones read in the problem's time zone."""
    t = pd.to_datetime(values)
    if getattr(t.dt, "tz", None) is None:
        return t.dt.tz_localize(time_zone, ambiguous="NaT", nonexistent="shift_forward").dt.tz_convert("UTC")
    return t.dt.tz_convert("UTC")


def check_columns(frame: pd.DataFrame, name: str, table: TableSpec, path: Path) -> pd.DataFrame:
    """The schema stage of one file: its columns, at least one row, and every typed column's values
    of their type (numbers held as text are converted). Names the file, the column, the rule and a count."""
    missing = [c for c in table.columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: table '{name}' lacks column(s) {missing}; problem.tables.{name}.columns needs "
            f"{list(table.columns)}"
        )
    if frame.empty:
        raise DataError(f"{path}: table '{name}' has no rows; remove the file or fill it")
    for col, kind in table.column_types.items():
        values = frame[col]
        if kind == "timestamp":
            check_timestamps(values, path, name, col)
            continue
        numbers = values if pd.api.types.is_numeric_dtype(values) else pd.to_numeric(values, errors="coerce")
        bad = values.notna() & numbers.isna()
        if bad.any():
            raise DataError(
                f"{path}: table '{name}', column '{col}' must hold numbers: {_count(bad)} do not, e.g. "
                f"{_examples(values[bad])}; fix them or leave them empty (missing)"
            )
        if kind == "integer":
            fractional = numbers.notna() & (numbers % 1 != 0)
            if fractional.any():
                raise DataError(
                    f"{path}: table '{name}', column '{col}' must hold whole numbers: {_count(fractional)} "
                    f"do not, e.g. {_examples(values[fractional])}"
                )
        if numbers is not values:
            frame[col] = numbers
    return frame


def check_timestamps(values: pd.Series, path: Path, table: str, col: str) -> None:
    """ISO 8601 instants, one convention per column: all with an offset or all without."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return
    text = values.dropna().astype(str)
    rule = f"{path}: table '{table}', column '{col}' must hold ISO 8601 timestamps (2013-01-31 or 2013-01-31 17:05:00)"
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    bad = parsed.isna()
    if bad.any():
        raise DataError(f"{rule}: {_count(bad)} do not, e.g. {_examples(text[bad])}")
    # One format per column: pandas reads a column in the format of its first value.
    inferred = pd.to_datetime(text, errors="coerce", utc=True)
    mixed = inferred.isna()
    if mixed.any():
        raise DataError(
            f"{rule}, all in one format: {_count(mixed)} differ from the first one ({text.iloc[0]!r}), "
            f"e.g. {_examples(text[mixed])}"
        )


def _count(mask: pd.Series) -> str:
    return f"{int(mask.sum()):,} of {len(mask):,} values"


def _examples(values: pd.Series, n: int = 3) -> str:
    return ", ".join(repr(v) for v in pd.unique(values.astype(str))[:n])


def required_columns(spec: ProblemConfig, extra: Sequence[str] = ()) -> list[str]:
    """What the prepared frame must hold for the core: ids, instants, label, request features, extra."""
    cols = [spec.entity_id, spec.prediction_time, spec.known_at, spec.label, *spec.request_features, *extra]
    return list(dict.fromkeys(cols))


def check_prepared(prepared: pd.DataFrame, spec: ProblemConfig, module: Path, extra: Sequence[str] = ()) -> None:
    """The prepared frame's contract, checked once where it is made, so later errors cannot be vague."""
    missing = [c for c in required_columns(spec, extra) if c not in prepared.columns]
    if missing:
        raise DataError(
            f"{module}: prepare() returned a frame without column(s) {missing}; the problem spec "
            f"(entity_id, prediction_time, known_at, label, request_features, gate.slices) names them"
        )
    for col in (spec.prediction_time, spec.known_at):
        if not isinstance(prepared[col].dtype, pd.DatetimeTZDtype):
            raise DataError(f"{module}: prepare() column '{col}' must hold UTC instants, got {prepared[col].dtype}")
    labels = set(np.unique(prepared[spec.label].dropna().to_numpy()).tolist())
    if not labels <= {0, 1}:
        raise DataError(f"{module}: prepare() label '{spec.label}' must be 0/1, got values {sorted(labels)[:5]}")
    dup = prepared[spec.entity_id].duplicated(keep=False)
    if dup.any():
        raise DataError(
            f"entity id '{spec.entity_id}' must be unique per prediction request: {_count(dup)} repeat one, "
            f"e.g. {_examples(prepared.loc[dup, spec.entity_id])}; the raw tables hold duplicated records "
            f"(remove them), or {module} builds the id from too few columns"
        )


_CLASSES: dict[Path, type[Problem]] = {}


def problem_class(module: Path) -> type[Problem]:
    """The ``Problem`` subclass defined in ``module`` (imported once per process)."""
    module = module.resolve()
    if module in _CLASSES:
        return _CLASSES[module]
    if not module.is_file():
        raise ConfigError(f"problem.module {module}: file not found; `evergreen init NAME` writes a skeleton")
    name = f"_evergreen_problem_{module.parent.name}_{abs(hash(str(module)))}"
    spec = importlib.util.spec_from_file_location(name, module)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    found = [v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, Problem) and v.__module__ == name]
    if len(found) != 1:
        raise ConfigError(
            f"problem.module {module}: expected exactly one subclass of evergreen.problem.Problem, "
            f"found {[c.__name__ for c in found] or 'none'}"
        )
    _CLASSES[module] = found[0]
    return found[0]


def load_problem(cfg: EvergreenConfig) -> Problem:
    return problem_class(cfg.problem.module)(cfg.problem, cfg.source_file)


def prepare_checked(cfg: EvergreenConfig, raw: RawData) -> pd.DataFrame:
    """The problem's labelled entity frame, checked against the spec where it is made."""
    prepared = load_problem(cfg).prepare(raw.tables)
    check_prepared(prepared, cfg.problem, cfg.problem.module, cfg.gate.slices)
    return prepared
