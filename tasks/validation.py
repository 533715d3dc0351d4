"""Validation stage: run the problem's GX suites on a batch; stop the run on a broken contract."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from evergreen.validation import SuiteResult, require_valid, validate_frames
from tasks.common import markdown_artifact


def _markdown(results: list[SuiteResult], title: str) -> str:
    lines = [f"# {title}", "", "| suite | rows | passed | result |", "|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.suite} | {r.rows} | {r.evaluated - len(r.failures)}/{r.evaluated} | "
            f"{'pass' if r.success else '**FAIL**'} |"
        )
    failed = [f for r in results for f in r.failures]
    if failed:
        lines += [
            "",
            "## Failed expectations",
            "",
            "| suite | expectation | column | unexpected | why |",
            "|---|---|---|---|---|",
        ]
        for r in results:
            for f in r.failures:
                lines.append(
                    f"| {r.suite} | {f.expectation} | {f.column or '-'} | "
                    f"{f.unexpected_count if f.unexpected_count is not None else f.observed} | {f.why or ''} |"
                )
    lines += ["", "Full results: " + ", ".join(f"`{r.report_path}`" for r in results)]
    return "\n".join(lines)


@task(name="validate-batch", cache_policy=NONE)
def validate_batch(
    frames: dict[str, pd.DataFrame], suites_dir: Path, report_dir: Path, title: str
) -> list[SuiteResult]:
    """Run each frame's suite; publish the verdict as an artifact; stop the run on a broken contract."""
    results = validate_frames(frames, suites_dir, report_dir)
    key = "validation-" + "-".join(sorted(frames)).replace("_", "-")
    markdown_artifact(_markdown(results, title), key=key[:60], description=title)
    require_valid(results, suites_dir)  # raises ValidationFailed with the per-expectation summary
    return results
