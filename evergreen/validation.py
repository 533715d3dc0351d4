"""Data contracts: Great Expectations 1.x suites kept beside each problem (``examples/<name>/expectations/``)
run on pandas batches.

A failed suite produces a short summary (expectation, column, unexpected count) for people and the
full GX result as JSON for tools; the caller stops the run on failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd


@dataclass
class Failure:
    expectation: str
    column: str | None
    unexpected_count: int | None
    unexpected_percent: float | None
    observed: Any
    why: str | None
    examples: list[Any] = field(default_factory=list)  # the most frequent unexpected values

    def line(self) -> str:
        where = f"column '{self.column}'" if self.column else "table"
        count = (
            f", {self.unexpected_count} unexpected ({self.unexpected_percent:.2f}%)" if self.unexpected_count else ""
        )
        seen = f", e.g. {', '.join(repr(v) for v in self.examples[:3])}" if self.examples else ""
        obs = f", observed {self.observed!r}" if self.observed is not None and not self.unexpected_count else ""
        why = f" ({self.why})" if self.why else ""
        return f"{self.expectation} on {where}{count}{seen}{obs}{why}"


@dataclass
class SuiteResult:
    suite: str
    success: bool
    evaluated: int
    rows: int
    failures: list[Failure] = field(default_factory=list)
    report_path: Path | None = None

    def summary(self) -> str:
        head = (
            f"suite '{self.suite}' on {self.rows} rows: {self.evaluated - len(self.failures)}/{self.evaluated} passed"
        )
        return "\n".join([head, *(f"  - {f.line()}" for f in self.failures)])


class ValidationFailed(RuntimeError):
    """A batch broke its data contract: nothing downstream may run on it."""

    def __init__(self, results: list[SuiteResult], suites_dir: Path | None = None):
        self.results = results
        failed = [r for r in results if not r.success]
        lines = ["Data validation failed; nothing was trained, registered or promoted."]
        for r in failed:
            lines.append(r.summary())
            if r.report_path:
                lines.append(f"  full result: {r.report_path}")
        lines.append(
            "Fix the batch (or, if the data is right and the contract wrong, the suite in "
            f"{suites_dir or 'the problem folder'}/)."
        )
        super().__init__("\n".join(lines))


LEARNED = "learned"  # <suites>/learned/<suite>.json: expectations learned from data (evergreen.contracts)


def load_suite_spec(name: str, suites_dir: Path) -> dict[str, Any]:
    path = suites_dir / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: expectation suite '{name}' not found; each raw table and the training frame need a "
            f'suite in problem.suites (an empty one is {{"name": "{name}", "expectations": []}})'
        )
    spec: dict[str, Any] = json.loads(path.read_text())
    learned = suites_dir / LEARNED / f"{name}.json"
    if learned.is_file():
        spec["expectations"] = [*spec["expectations"], *json.loads(learned.read_text())["expectations"]]
    return spec


# Expectations about the table's set of columns need every column; a row condition may name any.
_WHOLE_TABLE = ("expect_table_column", "expect_column_to_exist")
_COLUMN_KEYS = ("column", "column_A", "column_B", "column_list")


def suite_columns(spec: dict[str, Any]) -> list[str] | None:
    """The columns a suite reads, or None when it needs the whole table."""
    columns: dict[str, None] = {}
    for e in spec["expectations"]:
        kwargs = e.get("kwargs", {})
        if e["type"].startswith(_WHOLE_TABLE) or kwargs.get("row_condition"):
            return None
        for key in _COLUMN_KEYS:
            value = kwargs.get(key)
            for col in [value] if isinstance(value, str) else value or []:
                columns[col] = None
    return list(columns)


def suite_view(frame: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Only the columns the suite reads (GX copies whole rows while it filters: 43 columns where 8
    are checked cost 0.5 s instead of 0.15 s). A column the frame lacks stays missing, and fails."""
    wanted = suite_columns(spec)
    if wanted is None:
        return frame
    present = [c for c in wanted if c in frame.columns]
    return frame if len(present) == len(frame.columns) else frame[present]


def _failure(r: Any) -> Failure:
    cfg = r.expectation_config
    res = r.result or {}
    return Failure(
        expectation=cfg.type,
        column=cfg.kwargs.get("column"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        observed=res.get("observed_value"),
        why=(cfg.meta or {}).get("why"),
        # distinct values only: a missing value is already named by its expectation
        examples=[c["value"] for c in res.get("partial_unexpected_counts") or [] if pd.notna(c["value"])],
    )


# SUMMARY: besides counts, each failed expectation's most frequent unexpected values and where they
# are, which is what a person fixing a batch looks for first.
RESULT_FORMAT: Literal["SUMMARY"] = "SUMMARY"


def validate_frames(frames: dict[str, pd.DataFrame], suites_dir: Path, report_dir: Path) -> list[SuiteResult]:
    """Run the suite named like each frame; write each full result to ``report_dir/<suite>.json``."""
    import great_expectations as gx  # optional heavy import: see evergreen/__init__.py
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("evergreen")
    report_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name, frame in frames.items():
        spec = load_suite_spec(name, suites_dir)
        suite = context.suites.add(gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"]))
        batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        vd = gx.ValidationDefinition(name=name, data=batch_def, suite=suite)
        result = vd.run(batch_parameters={"dataframe": suite_view(frame, spec)}, result_format=RESULT_FORMAT)
        path = report_dir / f"{name}.json"
        full = result.to_json_dict()  # type: ignore[no-untyped-call]  # GX leaves it unannotated
        path.write_text(json.dumps(full, indent=1, default=str))
        failures = [_failure(r) for r in result.results if not r.success]
        results.append(SuiteResult(name, bool(result.success), len(result.results), len(frame), failures, path))
    return results


def require_valid(results: list[SuiteResult], suites_dir: Path | None = None) -> None:
    if not all(r.success for r in results):
        raise ValidationFailed(results, suites_dir)
