"""The model card: what a registered version is, what it was made from and why it was (not) promoted.

Rendered as markdown from plain values, and written into the version's description in the MLflow
registry, which the UI shows on the version's page. MLflow's SQL stores keep at most 5,000 characters
there (PostgreSQL enforces it), so the card orders its parts from most to least needed, ends with the
feature list, and is cut to fit with a pointer to the full card, logged as ``model_card.md`` on the
training run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evergreen.config import ProblemConfig
from evergreen.gate import HIGHER_IS_BETTER, GateDecision
from evergreen.training import Windows

# MLflow's model_versions.description is a VARCHAR(5000).
MAX_DESCRIPTION = 5000
CARD_ARTIFACT = "model_card.md"


@dataclass(frozen=True)
class Lineage:
    """Where a version came from."""

    run_id: str
    data_fingerprint: str
    flow_run: str
    git_sha: str = ""
    config_hash: str = ""
    run_url: str = ""

    @classmethod
    def from_tags(cls, run_id: str, tags: Mapping[str, str], run_url: str = "") -> Lineage:
        """From the training run's ``evergreen.*`` lineage tags (``tracking.lineage_tags``)."""
        return cls(
            run_id=run_id,
            data_fingerprint=tags.get("evergreen.data_fingerprint", ""),
            flow_run=tags.get("evergreen.flow_run", ""),
            git_sha=tags.get("evergreen.git_sha", ""),
            config_hash=tags.get("evergreen.config_hash", ""),
            run_url=run_url,
        )


def intended_use(spec: ProblemConfig) -> str:
    """The spec's own words, else a sentence built from its names."""
    return spec.intended_use or (
        f"Scores the probability of `{spec.label}` for one `{spec.entity_id}` at its `{spec.prediction_time}`, "
        "from features known at that instant, to rank cases by risk."
    )


def limitations(spec: ProblemConfig) -> str:
    return spec.limitations or (
        "Judged on one out-of-time holdout only: quality outside the data window, or for segments that "
        "window lacks, is unknown (the drift flow watches for shifts). Scores rank risk; they do not explain it."
    )


def _day(t: object) -> str:
    return str(t)[:10]


def _metrics_table(d: GateDecision) -> list[str]:
    champ = f"champion v{d.champion_version}" if d.champion_version else "champion"
    lines = [f"| metric | this version | {champ} | change |", "|---|---|---|---|"]
    for name, value in d.challenger.items():
        if d.champion and name in d.champion:
            old = d.champion[name]
            better = (value >= old) == HIGHER_IS_BETTER.get(name, True)
            lines.append(
                f"| {name} | {value:.4f} | {old:.4f} | {value - old:+.4f} ({'better' if better else 'worse'}) |"
            )
        else:
            lines.append(f"| {name} | {value:.4f} | - | - |")
    return lines


def render_model_card(
    model_name: str,
    spec: ProblemConfig,
    windows: Windows,
    train_rows: int,
    holdout_rows: int,
    decision: GateDecision,
    features: Sequence[str],
    lineage: Lineage,
    categorical: Sequence[str] = (),
) -> str:
    """The whole card as markdown (see :func:`fit_description` for the registry's size limit)."""
    verdict = decision.verdict.upper()
    against = "cold start (no champion)" if decision.cold_start else f"against champion v{decision.champion_version}"
    lines = [
        f"# Model card: {model_name}",
        "",
        f"**Problem** `{spec.name}`: {spec.description or '-'}  ",
        f"**Label** `{spec.label}`, one row per `{spec.entity_id}` at `{spec.prediction_time}`.  ",
        f"**Gate verdict: {verdict}** ({against}).",
        "",
        "## Data window",
        "",
        "| part | from | to (excl.) | rows |",
        "|---|---|---|---|",
        f"| training | {_day(windows.start)} | {_day(windows.holdout_start)} | {train_rows} |",
        f"| of which tuning | {_day(windows.validation_start)} | {_day(windows.holdout_start)} | |",
        f"| holdout (out of time) | {_day(windows.holdout_start)} | {_day(windows.end)} | {holdout_rows} |",
        "",
        "## Holdout metrics at gate time",
        "",
        *_metrics_table(decision),
    ]
    if decision.auc_diff:
        a = decision.auc_diff
        lines += [
            "",
            f"ROC AUC gain {a['mean']:+.4f}, {a['confidence']:.0%} paired-bootstrap CI [{a['lower']:+.4f}, {a['upper']:+.4f}].",
        ]
    lines += ["", f"## Gate: {verdict}", "", *[f"- {r}" for r in decision.reasons]]
    lines += ["", "## Intended use", "", intended_use(spec), "", "## Limitations", "", limitations(spec)]
    run = f"[{lineage.run_id}]({lineage.run_url})" if lineage.run_url else f"`{lineage.run_id}`"
    lines += [
        "",
        "## Lineage",
        "",
        f"- MLflow run: {run}",
        f"- data fingerprint: `{lineage.data_fingerprint}`",
        f"- flow run: `{lineage.flow_run or '-'}`",
    ]
    lines += [f"- code: `{lineage.git_sha}`"] if lineage.git_sha else []
    lines += [f"- config: `{lineage.config_hash[:16]}`"] if lineage.config_hash else []
    marked = [f"`{f}`" + (" (categorical)" if f in categorical else "") for f in features]
    lines += ["", f"## Features ({len(features)})", "", ", ".join(marked)]
    return "\n".join(lines) + "\n"


def fit_description(card: str, limit: int = MAX_DESCRIPTION, where: str = CARD_ARTIFACT) -> str:
    """The card, cut at a line boundary to fit the registry's description field when it must be."""
    if len(card) <= limit:
        return card
    tail = f"\n\n*(cut to fit the registry; the whole card is `{where}` on the MLflow run)*\n"
    head = card[: limit - len(tail)]
    return head[: head.rfind("\n")] + tail
