"""Bad input, as a user meets it: a corrupted export of real data run through the features and the
training flow from their command line. Each kind of corruption must stop the run with exit code 2 and
one message that names the file or suite, the column and the rule, with no traceback; a features run
must leave the published Feast snapshot exactly as it was, a training run must log nothing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import write_config

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine

Tables = dict[str, pd.DataFrame]


@dataclass(frozen=True)
class Case:
    example: str
    flow: str  # "features" or "training"
    corrupt: Callable[[Tables], Tables]
    expected: tuple[str, ...]  # fragments of the error message


def _rows(frame: pd.DataFrame, share: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(len(frame)) < share


def duplicated(table: str, n: int = 500) -> Callable[[Tables], Tables]:
    return lambda t: {**t, table: pd.concat([t[table], t[table].sample(n, random_state=1)], ignore_index=True)}


def replaced(table: str, column: str, value: object, share: float) -> Callable[[Tables], Tables]:
    def corrupt(t: Tables) -> Tables:
        frame = t[table].copy()
        frame[column] = frame[column].astype(object)
        frame.loc[_rows(frame, share), column] = value
        return {**t, table: frame}

    return corrupt


def nulled(table: str, column: str, share: float) -> Callable[[Tables], Tables]:
    def corrupt(t: Tables) -> Tables:
        frame = t[table].copy()
        frame.loc[_rows(frame, share), column] = None
        return {**t, table: frame}

    return corrupt


def constant(table: str, column: str, value: float) -> Callable[[Tables], Tables]:
    return lambda t: {**t, table: t[table].assign(**{column: value})}


def without_rows(table: str, column: str, value: str) -> Callable[[Tables], Tables]:
    return lambda t: {**t, table: t[table][t[table][column] != value]}


def without_column(table: str, column: str) -> Callable[[Tables], Tables]:
    return lambda t: {**t, table: t[table].drop(columns=column)}


def emptied(table: str) -> Callable[[Tables], Tables]:
    return lambda t: {**t, table: t[table].iloc[:0]}


def reformatted(table: str, column: str, share: float) -> Callable[[Tables], Tables]:
    """Some timestamps written day-first, as a spreadsheet would."""

    def corrupt(t: Tables) -> Tables:
        frame = t[table].copy()
        rows = _rows(frame, share)
        frame.loc[rows, column] = pd.to_datetime(frame.loc[rows, column]).dt.strftime("%d/%m/%Y %H:%M")
        return {**t, table: frame}

    return corrupt


CASES = {
    # the features flow: nothing may be published
    "flights-duplicated-rows": Case(
        "flights", "features", duplicated("flights"), ("'flight_id' must be unique", "1,000 of")
    ),
    "flights-unknown-airport": Case(
        "flights",
        "features",
        replaced("flights", "origin", "XXX", 0.03),
        ("expect_column_values_to_be_in_set on column 'origin'", "'XXX'"),
    ),
    "flights-station-weather-missing": Case(
        "flights",
        "features",
        without_rows("weather", "origin", "JFK"),
        ("on column 'temp'",),
    ),
    "flights-constant-label": Case(
        "flights", "features", constant("flights", "arr_delay", 60.0), ("on column 'delayed'",)
    ),
    "dot2015-unknown-airline": Case(
        "dot2015",
        "features",
        replaced("flights", "AIRLINE", "ZZ", 0.05),
        ("expect_column_values_to_be_in_set on column 'AIRLINE'", "'ZZ'"),
    ),
    "dot2015-duplicated-rows": Case(
        "dot2015", "features", duplicated("flights"), ("expect_column_values_to_be_unique on column 'Unnamed: 0'",)
    ),
    # the training flow: nothing may be trained or logged
    "flights-null-flood": Case(
        "flights",
        "training",
        nulled("flights", "dep_delay", 0.6),
        ("expect_column_proportion_of_non_null_values_to_be_between on column 'dep_delay'",),
    ),
    "flights-text-in-numbers": Case(
        "flights",
        "training",
        replaced("flights", "arr_delay", "late", 0.001),
        ("flights.csv: table 'flights', column 'arr_delay' must hold numbers", "values do not", "'late'"),
    ),
    "flights-mixed-timestamps": Case(
        "flights",
        "training",
        reformatted("flights", "time_hour", 0.01),
        ("flights.csv: table 'flights', column 'time_hour' must hold ISO 8601 timestamps", "values do not"),
    ),
    "flights-empty-table": Case(
        "flights", "training", emptied("weather"), ("weather.csv: table 'weather' has no rows",)
    ),
    "flights-missing-column": Case(
        "flights", "training", without_column("flights", "dest"), ("table 'flights' lacks column(s) ['dest']",)
    ),
    "flights-negative-distance": Case(
        "flights", "training", constant("flights", "distance", -5.0), ("on column 'distance'",)
    ),
    "dot2015-text-in-numbers": Case(
        "dot2015",
        "training",
        replaced("flights", "DEPARTURE_DELAY", "delayed", 0.002),
        ("column 'DEPARTURE_DELAY' must hold numbers", "'delayed'"),
    ),
    "dot2015-unparseable-dates": Case(
        "dot2015",
        "training",
        replaced("flights", "DATE", "2015-13-45", 0.001),
        ("column 'DATE' must hold ISO 8601 timestamps", "'2015-13-45'"),
    ),
}


def snapshot_state(cfg) -> tuple[str, str, list[str]]:
    """What readers see: the published snapshot, a hash of all its files, and the state folder's entries."""
    live = Path(cfg.feast_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in live.resolve().rglob("*") if p.is_file()):
        h.update(str(path.relative_to(live.resolve())).encode())
        h.update(path.read_bytes())
    return os.path.realpath(live), h.hexdigest(), sorted(p.name for p in live.parent.iterdir())


FLIGHTS = [k for k, c in CASES.items() if c.example == "flights"]
DOT2015 = [k for k, c in CASES.items() if c.example == "dot2015"]


@pytest.mark.parametrize("case", FLIGHTS)
def test_bad_flights_input_stops_the_run_and_changes_nothing(case, env, tmp_path, capsys):
    check(CASES[case], env, tmp_path, capsys)


@pytest.mark.parametrize("example_env", ["dot2015"], indirect=True)
@pytest.mark.parametrize("case", DOT2015)
def test_bad_dot2015_input_stops_the_run_and_changes_nothing(case, example_env, tmp_path, capsys):
    check(CASES[case], example_env, tmp_path, capsys)


_RAW: dict[str, Tables] = {}


def check(spec: Case, env: dict, tmp_path: Path, capsys) -> None:
    """Run the case's flow from its command line on the corrupted export; check the error and the state."""
    from evergreen.problem import load_problem

    cfg, example = env["cfg"], env["example"]
    if spec.example not in _RAW:
        _RAW[spec.example] = load_problem(cfg).load_tables(cfg.data.source).tables
    data = tmp_path / "export"
    data.mkdir()
    for name, frame in spec.corrupt(dict(_RAW[spec.example])).items():  # one CSV per table
        frame.to_csv(data / f"{name}.csv", index=False)
    one_file = {"tables": {name: {"files": [name]} for name in cfg.problem.tables}}
    path = write_config(
        tmp_path / "bad.yaml", cfg.home, spec.example, data={"source": str(data)}, problem=one_file, **example.sections
    )
    mlflow.set_tracking_uri(cfg.tracking_uri)
    before = snapshot_state(cfg)
    runs = len(mlflow.search_runs(experiment_names=[cfg.registry.experiment]))
    capsys.readouterr()
    if spec.flow == "features":
        from flows.features import main

        rc = main(["--config", str(path)])
    else:
        from flows.training import main

        rc = main(["--config", str(path), "--as-of", example.first_as_of, "--n-trials", "1"])
    err = capsys.readouterr().err
    message = err[err.index("error: ") :] if "error: " in err else err
    assert rc == 2, err[-3000:]
    for fragment in spec.expected:
        assert fragment in message, message
    assert "Traceback" not in err
    assert snapshot_state(cfg) == before  # the published snapshot, byte for byte, and no staged leftovers
    assert len(mlflow.search_runs(experiment_names=[cfg.registry.experiment])) == runs  # nothing trained
