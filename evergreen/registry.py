"""MLflow model registry with aliases only (stages are deprecated), an alias audit log, and rollback.

Aliases: ``challenger`` (latest gated candidate), ``champion`` (serves), ``previous_champion`` (the
rollback target). Every move is appended to the registered model's tags as
``evergreen.alias_log.<seq>`` = JSON {at, alias, from, to, reason, actor, flow_run}: the history
lives with the registry itself, so a rollback needs nothing else.

The tags stay the machine-readable store: the registry API writes one per move with no run to open,
any MLflow backend keeps them, and homes made before keep working. A description could not replace
them (a person may edit it; MLflow's SQL stores cap it at 5,000 characters), nor could a run artifact
(an alias move has no run, and an artifact cannot be appended to). For people, the registered
model's description ends with an "Alias history" markdown table (the current aliases and the latest
moves, newest first), rewritten from the tags on every move; the text above it is left as written.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.pyfunc import PyFuncModel

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous_champion"
LOG_PREFIX = "evergreen.alias_log."
HISTORY_HEADING = "## Alias history"
# MLflow's registered_models.description is a VARCHAR(5000).
MAX_DESCRIPTION = 5000


class RegistryError(RuntimeError):
    """A registry operation that cannot proceed; nothing was changed."""


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer: the run stops where it is (alias moves already
    made are undone by ``move_aliases``)."""


def _answers(tracking_uri: str) -> str | None:
    """None when the tracking server answers its health check, else why not. A local store always does."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=10.0).raise_for_status()
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}".strip()
    return None


def _unavailable(tracking_uri: str, why: str, consequence: str) -> TrackingUnavailable:
    return TrackingUnavailable(
        f"the MLflow tracking server at {tracking_uri} does not answer ({why}); {consequence}. "
        "Start it (`uv run python -m deployments.stack up`) or point EVERGREEN_TRACKING_URI "
        "(registry.tracking_uri) at a running server, then run again."
    )


def check_tracking(tracking_uri: str) -> None:
    """Fail before any work is done when the tracking server is down, not after training."""
    if (why := _answers(tracking_uri)) is not None:
        raise _unavailable(tracking_uri, why, "the run did nothing")


@contextmanager
def tracking_errors(tracking_uri: str) -> Iterator[None]:
    """A failure while the tracking server is down is reported as that, in one line: whatever MLflow
    raised after its retries (a connection error deep in a client call) says less. A call that
    moves aliases restores them when it fails (``move_aliases``), so a stop never half-promotes."""
    try:
        yield
    except Exception as e:
        if (why := _answers(tracking_uri)) is not None:
            raise _unavailable(tracking_uri, why, "the run stopped at its first call after that") from e
        raise


@dataclass
class AliasMove:
    at: str
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    actor: str
    flow_run: str | None


# The training sample (features, label, score) logged with each model: the drift check's reference.
REFERENCE_FILE = "reference/reference_sample.parquet"


@dataclass
class Champion:
    """The serving model: version, training run, data time and the feature columns of its signature."""

    version: str
    run_id: str
    as_of: pd.Timestamp | None
    features: list[str]
    model: PyFuncModel

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """The champion's probabilities on ``frame`` (its feature columns, in the logged order)."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"the frame lacks feature column(s) {missing} that champion v{self.version} uses")
        return np.asarray(self.model.predict(frame[self.features]), dtype="float64")


def client(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def load_champion(tracking_uri: str, name: str) -> Champion | None:
    """The ``@champion`` model (None: no champion yet)."""
    import mlflow

    c = client(tracking_uri)
    version = alias_version(c, name, CHAMPION)
    if version is None:
        return None
    mv = c.get_model_version(name, version)
    mlflow.set_tracking_uri(tracking_uri)
    # Through this client's registry, not MLflow's process-wide one: a registry URI inherited from
    # the environment (MLFLOW_REGISTRY_URI, which set_registry_uri exports) may name another store.
    model = mlflow.pyfunc.load_model(c.get_model_version_download_uri(name, version))
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise RegistryError(f"model '{name}' v{version} was logged without an input signature")
    as_of = mv.tags.get("evergreen.as_of")
    return Champion(version, str(mv.run_id), pd.Timestamp(as_of) if as_of else None, schema.input_names(), model)


def reference_sample(tracking_uri: str, champion: Champion) -> pd.DataFrame:
    """The sample of its training window logged with the champion, with its scores (drift's reference)."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(
        run_id=champion.run_id, artifact_path=REFERENCE_FILE, tracking_uri=tracking_uri
    )
    return pd.read_parquet(path)


def last_retrain_as_of(c: MlflowClient, name: str) -> pd.Timestamp | None:
    """The data time of the most recent training run that registered a version (passed gate or not)."""
    stamps = [
        pd.Timestamp(v.tags["evergreen.as_of"])
        for v in c.search_model_versions(f"name='{name}'")
        if "evergreen.as_of" in v.tags
    ]
    return max(stamps) if stamps else None


def ensure_model(c: MlflowClient, name: str, description: str = "") -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=description or None)


def alias_version(c: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


# The canary's share of traffic (percent), on the canary's model version: every gateway replica reads
# it from the registry they share, and a new canary version starts at 0 with no tag to reset.
CANARY_WEIGHT_TAG = "evergreen.canary_weight"


def canary_weight(c: MlflowClient, name: str, version: str | None) -> float:
    """The weight recorded on ``version`` (0 when none is, or when there is no canary)."""
    if version is None:
        return 0.0
    return float(c.get_model_version(name, version).tags.get(CANARY_WEIGHT_TAG, 0.0))


def set_canary_weight(c: MlflowClient, name: str, version: str, weight: float) -> None:
    c.set_model_version_tag(name, version, CANARY_WEIGHT_TAG, f"{weight:g}")


def aliases(c: MlflowClient, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return {k: str(v) for k, v in c.get_registered_model(name).aliases.items()}
    except MlflowException:
        return {}


def history(c: MlflowClient, name: str) -> list[AliasMove]:
    from mlflow.exceptions import MlflowException

    try:
        tags = c.get_registered_model(name).tags
    except MlflowException:
        return []
    entries = sorted((k, v) for k, v in tags.items() if k.startswith(LOG_PREFIX))
    return [AliasMove(**json.loads(v)) for _, v in entries]


def _record(c: MlflowClient, name: str, move: AliasMove) -> None:
    seq = len(history(c, name)) + 1
    c.set_registered_model_tag(name, f"{LOG_PREFIX}{seq:06d}", json.dumps(asdict(move)))


def _move(
    c: MlflowClient, name: str, alias: str, to: str | None, reason: str, actor: str, flow_run: str | None
) -> None:
    before = alias_version(c, name, alias)
    if before == to:
        return
    if to is None:
        c.delete_registered_model_alias(name, alias)
    else:
        c.set_registered_model_alias(name, alias, to)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    _record(c, name, AliasMove(now, alias, before, to, reason, actor, flow_run))


def _restore(c: MlflowClient, name: str, snapshot: dict[str, str]) -> None:
    """Put aliases back exactly as in ``snapshot`` (used when a multi-alias move fails half-way)."""
    current = aliases(c, name)
    for alias in set(current) | set(snapshot):
        if alias in snapshot and current.get(alias) != snapshot[alias]:
            c.set_registered_model_alias(name, alias, snapshot[alias])
        elif alias not in snapshot and alias in current:
            c.delete_registered_model_alias(name, alias)


def move_aliases(
    c: MlflowClient,
    name: str,
    moves: list[tuple[str, str | None]],
    reason: str,
    flow_run: str | None,
    actor: str | None = None,
) -> None:
    """Apply several alias moves as one change: on any failure, the aliases are restored."""
    actor = actor or getpass.getuser()
    snapshot = aliases(c, name)
    try:
        for alias, to in moves:
            if alias == "canary" and to is not None and to != snapshot.get("canary"):
                set_canary_weight(c, name, to, 0.0)  # a version becoming the canary starts with no traffic
            _move(c, name, alias, to, reason, actor, flow_run)
    except Exception:
        _restore(c, name, snapshot)
        raise
    show_history(c, name)


def _cell(text: str | None) -> str:
    return "-" if text is None else str(text).replace("|", "\\|").replace("\n", " ")


def history_markdown(moves: list[AliasMove], current: dict[str, str], limit: int = MAX_DESCRIPTION) -> str:
    """The "Alias history" section: current aliases, then the latest moves newest first, as many
    as fit in ``limit`` characters (the full log: ``evergreen history``)."""
    now = ", ".join(f"`{a}` v{v}" for a, v in sorted(current.items())) or "none"
    head = [HISTORY_HEADING, "", f"Current aliases: {now}. Newest first; every move: `evergreen history`.", ""]
    head += ["| when (UTC) | alias | from | to | by | flow run | why |", "|---|---|---|---|---|---|---|"]
    text = "\n".join(head)
    for m in reversed(moves):
        row = (
            f"\n| {m.at.replace('+00:00', '')} | `{m.alias}` | {_cell(m.from_version)} | {_cell(m.to_version)} "
            f"| {_cell(m.actor)} | {_cell(m.flow_run)} | {_cell(m.reason)} |"
        )
        if len(text) + len(row) > limit:
            break
        text += row
    return text + "\n"


def show_history(c: MlflowClient, name: str) -> None:
    """Rewrite the "Alias history" section at the end of the registered model's description from
    the log; the text above it (the problem's description, a person's notes) is kept. Two processes
    moving aliases at once may leave the table one move behind until the next move: the tags, which
    history and rollback read, stay exact."""
    rm = c.get_registered_model(name)
    above = (rm.description or "").split(HISTORY_HEADING, 1)[0].rstrip()
    room = MAX_DESCRIPTION - len(above) - 2  # the table takes what the text above leaves
    table = history_markdown(history(c, name), {k: str(v) for k, v in rm.aliases.items()}, room)
    c.update_registered_model(name, description=f"{above}\n\n{table}" if above else table)


def register(
    c: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    description: str = "",
    version_description: str = "",
) -> str:
    """A new version of ``name`` (created with ``description`` if missing); ``version_description``
    is the version's own (its model card), set with the version so that no version lacks it."""
    ensure_model(c, name, description)
    # An MLflow 3 logged model ("models:/m-<id>") must be named by id too, or a tracking server refuses it.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = c.create_model_version(
        name=name,
        source=model_uri,
        run_id=run_id,
        tags=tags,
        description=version_description or None,
        model_id=model_id,
    )
    return str(mv.version)


def promote(c: MlflowClient, name: str, version: str, reason: str, flow_run: str | None) -> str | None:
    """``champion`` -> ``version``; the old champion keeps ``previous_champion``. Returns the old one."""
    old = alias_version(c, name, CHAMPION)
    moves: list[tuple[str, str | None]] = []
    if old is not None and old != version:
        moves.append((PREVIOUS, old))
    moves.append((CHAMPION, version))
    move_aliases(c, name, moves, reason, flow_run)
    return old


def rollback(
    c: MlflowClient, name: str, reason: str, flow_run: str | None = None, actor: str | None = None
) -> tuple[str, str]:
    """Move ``champion`` back to ``previous_champion``; ``previous_champion`` moves one further back
    (the champion before it, from the log) or is removed. Returns (from_version, to_version)."""
    current = alias_version(c, name, CHAMPION)
    target = alias_version(c, name, PREVIOUS)
    if current is None:
        raise RegistryError(f"model '{name}' has no champion: nothing to roll back")
    if target is None:
        raise RegistryError(f"model '{name}' has no '{PREVIOUS}' alias: champion v{current} is the first one")
    # The champion that preceded `target`, as the log recorded it when `target` was promoted.
    earlier = None
    for move in reversed(history(c, name)):
        if move.alias == CHAMPION and move.to_version == target:
            earlier = move.from_version
            break
    if earlier == target:
        earlier = None
    move_aliases(c, name, [(CHAMPION, target), (PREVIOUS, earlier)], f"rollback: {reason}", flow_run, actor)
    c.set_model_version_tag(name, current, "evergreen.rolled_back", datetime.now(UTC).isoformat(timespec="seconds"))
    return current, target
