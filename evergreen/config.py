"""Configuration: YAML -> env-var expansion -> strict pydantic model -> errors that name file and field.

Relative paths in a config file are resolved against the folder the file sits in, so a config means
the same thing whatever the working directory is. A file may start from another one
(``extends: ../examples/<name>/config.yaml``): its sections are merged over the other's, key by key.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROOT = Path(__file__).resolve().parent.parent
# The environment picks the config (e.g. a worker started with EVERGREEN_CONFIG=configs/prod.yaml).
DEFAULT_CONFIG = os.environ.get("EVERGREEN_CONFIG") or str(ROOT / "configs" / "default.yaml")

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the field and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    # A folder holding the problem's tables (.parquet, .csv, .csv.gz or .csv.zip files), or a name the
    # problem module knows (Problem.locate: e.g. the data folder of an installed package).
    source: str


class TableSpec(_Strict):
    """One raw table: the columns every run needs, and how to cut a run's batch out of it."""

    columns: list[str] = Field(min_length=1)
    # File names (without suffix) in data.source whose rows form the table; default: the table's name.
    files: list[str] = []
    # A run validates the rows whose time lies in its windows plus the feature lookback; a table
    # without a time column (static attributes) is validated whole.
    time_column: str | None = None
    # What each column must hold, checked as each file is read, before anything computes on it:
    # "number" / "integer" (text that is not a number is refused, not read as missing) and "timestamp"
    # (ISO 8601). The time column is a timestamp whether or not it is listed.
    types: dict[str, Literal["number", "integer", "timestamp"]] = {}

    @model_validator(mode="after")
    def _typed_columns_are_columns(self) -> TableSpec:
        unknown = [c for c in [*self.types, *([self.time_column] if self.time_column else [])] if c not in self.columns]
        if unknown:
            raise ValueError(f"{unknown} not in columns {self.columns}")
        return self

    @property
    def column_types(self) -> dict[str, str]:
        return {**self.types, **({self.time_column: "timestamp"} if self.time_column else {})}


class RequestField(_Strict):
    """One field of a serving request, as the gateway validates it."""

    type: Literal["string", "number", "integer"]
    ge: float | None = None
    le: float | None = None
    description: str = ""


class ProblemConfig(_Strict):
    """What a problem is, in names: the core reads these and holds no domain word."""

    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    # The model card's "intended use" and "limitations" (each registered version's description in
    # MLflow); empty: a generic sentence built from the names below.
    intended_use: str = ""
    limitations: str = ""
    # The module implementing evergreen.problem.Problem (loading, labelling, feature tables); its
    # folder holds the problem's Feast repo (feature_repo/) and suites (expectations/) by default.
    module: Path
    tables: dict[str, TableSpec] = Field(min_length=1)
    # The prepared frame (Problem.prepare): one row per prediction request with these columns.
    entity_id: str
    prediction_time: str = "prediction_time"  # every feature must be known at this instant
    known_at: str = "known_at"  # when the label became known: rows enter training only after it
    label: str
    # Sent with each request and used as model inputs as they are; the rest comes from Feast.
    request_features: list[str] = []
    categorical: list[str] = []
    time_zone: str = "UTC"
    # Raw rows this long before a window still feed its features (validated with the window's batch).
    feature_lookback_days: float = Field(0.0, ge=0)
    # GX suites, one per raw table (named like it) and training_frame.json for the retrieved frame;
    # default: expectations/ beside the module.
    suites: Path | None = None
    # The serving gateway's request schema; the entity id must be one of the fields.
    request: dict[str, RequestField] = Field(min_length=1)
    # The problem's own settings, validated by its module's Params model.
    params: dict[str, Any] = {}
    # The as_of dates `python -m flows.main` trains at, in order (empty: once, at the end of the data).
    main_as_of: list[datetime] = []

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            pd.Timestamp("2000-01-01", tz=v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as 'America/New_York'") from None
        return v

    @property
    def lookback(self) -> pd.Timedelta:
        return pd.Timedelta(days=self.feature_lookback_days)


class FeaturesConfig(_Strict):
    feast_repo: Path | None = None  # default: feature_repo/ beside the problem module
    feature_service: str
    project: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # Point-in-time joins: "asof" = DuckDB ASOF JOIN (evergreen.asof_store), "duckdb" = Feast's own store.
    offline_store: Literal["asof", "duckdb"] = "asof"
    # Shared Feast state, for workers on several machines; each empty = the embedded default in the home.
    # Where snapshots' feature tables go: a folder, or s3://bucket/prefix (credentials and endpoint from
    # the standard AWS_* variables, e.g. AWS_ENDPOINT_URL for MinIO). Default: <home>/feast.
    files_url: str | None = None
    # Feast's SQL registry: an SQLAlchemy URL (e.g. postgresql+psycopg://...). Default: a registry.db
    # file in each snapshot.
    registry_url: str | None = None
    # Feast's Redis online store: redis://[:password@]host:port[/db] (rediss:// for TLS). Default: an
    # SQLite file in each snapshot.
    online_url: str | None = None

    @field_validator("files_url", "registry_url", "online_url", mode="before")
    @classmethod
    def _blank_is_default(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("files_url")
    @classmethod
    def _files_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "://" in v and not v.startswith("s3://"):
            raise ValueError(f"{v!r}: feature files go to a local folder or an s3://bucket/prefix URL")
        if "://" not in v and not Path(v).is_absolute():
            raise ValueError(f"{v!r}: give an absolute folder (or s3://bucket/prefix)")
        return v.rstrip("/")

    @field_validator("registry_url")
    @classmethod
    def _registry_url(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            raise ValueError(f"{v!r}: Feast's SQL registry takes an SQLAlchemy URL, e.g. postgresql+psycopg://host/db")
        return v

    @field_validator("online_url")
    @classmethod
    def _online_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://")):
            raise ValueError(f"{v!r}: the shared online store is Redis: redis://[:password@]host:port[/db]")
        return v

    @model_validator(mode="after")
    def _remote_files_need_shared_stores(self) -> FeaturesConfig:
        if self.files_url and self.files_url.startswith("s3://") and not (self.registry_url and self.online_url):
            raise ValueError(
                "files_url is in S3, so the registry and the online store must be shared too: set "
                "features.registry_url (SQL) and features.online_url (Redis)"
            )
        return self

    @property
    def shared_stores(self) -> bool:
        """True when the registry or online store outlives a snapshot: each snapshot is then its own
        Feast project in them (published and retired whole)."""
        return bool(self.registry_url or self.online_url)


class WindowConfig(_Strict):
    train_days: int = Field(120, ge=7)
    holdout_days: int = Field(14, ge=1)
    validation_days: int = Field(14, ge=1)


class TuningConfig(_Strict):
    n_trials: int = Field(50, ge=1)
    timeout_seconds: float = Field(240.0, gt=0)
    max_boost_rounds: int = Field(600, ge=10)
    early_stopping_rounds: int = Field(30, ge=1)
    report_interval: int = Field(10, ge=1)
    threads: int | None = Field(None, ge=1, description="LightGBM threads; default all cores")
    seed: int = 42
    # A running trial records a heartbeat this often; one silent for two intervals belongs to a
    # process that died, and the next tuner on the study marks it failed (never counted as done).
    heartbeat_seconds: int = Field(30, ge=1)
    # The study's database (an SQLAlchemy URL, e.g. postgresql+psycopg://...): tuners on several
    # machines share it. Empty means the embedded default: sqlite:///<home>/optuna.db
    storage: str | None = None
    # Tuners searching the one study at once, each with its own sampler seed and share of the trial
    # budget, and threads / workers LightGBM threads each. 1 = one search in the flow's process.
    workers: int = Field(1, ge=1)
    # A Dask scheduler (tcp://host:8786) whose workers run the tuners instead of the flow run's
    # process: each tuner then has its Dask worker's cores (``threads``, default all of them), so run
    # Dask workers with one thread each. Empty = tuners on threads of the flow run's process.
    dask_address: str | None = None

    @field_validator("dask_address", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v


class GateConfig(_Strict):
    primary_metric: Literal["roc_auc"] = "roc_auc"
    floors: dict[Literal["roc_auc", "pr_auc", "log_loss", "brier"], float] = {
        "roc_auc": 0.65,
        "pr_auc": 0.25,
        "log_loss": 0.65,
        "brier": 0.24,
    }
    # The lower bound of the paired-bootstrap CI of (challenger - champion) ROC AUC must reach this:
    # a challenger that is not measurably better than the champion is not promoted.
    min_improvement: float = 0.001
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    n_bootstrap: int = Field(500, ge=50)
    # Secondary metrics may not get worse than this (absolute change, in the metric's bad direction).
    max_secondary_regression: dict[Literal["pr_auc", "log_loss", "brier"], float] = {
        "pr_auc": 0.01,
        "log_loss": 0.005,
        "brier": 0.002,
    }
    # Entity-frame columns whose values must not regress (e.g. one region, one customer segment).
    slices: list[str] = []
    slice_min_support: int = Field(300, ge=1)
    max_slice_regression: float = Field(0.02, ge=0)
    cold_start: Literal["promote", "hold"] = "promote"
    seed: int = 7


class RegistryConfig(_Strict):
    model_name: str = Field(min_length=1)
    experiment: str = "evergreen-training"
    # Empty means the embedded default: sqlite:///<home>/mlflow.db
    tracking_uri: str | None = None
    # Where the experiment keeps its artifacts when Evergreen creates it (e.g. s3://bucket/mlflow or
    # mlflow-artifacts:/). Empty: <home>/mlartifacts with the embedded store; the server's own
    # artifact store when tracking_uri is a server.
    artifact_location: str | None = None
    # Where a browser opens the MLflow UI, for the links in Prefect artifacts. Empty: the tracking
    # server itself when it is one (http/https), else what `mlflow ui` serves by default.
    ui_url: str | None = None
    reference_sample_rows: int = Field(20000, ge=100)


class DriftConfig(_Strict):
    lookback_days: float = Field(7.0, gt=0, description="current window: rows predicted in [as_of - lookback, as_of)")
    min_rows: int = Field(500, ge=1, description="fewer current rows than this: a documented no-op, no event")
    # Numeric features: KS, drifted only when significant AND the effect is large enough (KS p-values
    # on big windows flag trivial shifts).
    ks_pvalue: float = Field(0.01, gt=0, lt=1)
    ks_min_statistic: float = Field(0.2, gt=0, le=1)
    # Categorical features (and numeric ones listed in psi_numeric_columns): PSI at or above threshold,
    # binned as Evidently bins (equal-width Sturges bins over both samples).
    psi_threshold: float = Field(0.2, gt=0)
    psi_numeric_columns: list[str] = []
    # Overall decision: share of drifted features, or any drifted key feature, or prediction drift.
    drifted_share: float = Field(0.4, gt=0, le=1)
    # Features whose drift alone is drift: pick ones that move when the world moves and stay put from
    # one ordinary window to the next.
    key_features: list[str] = []
    prediction_psi_threshold: float = Field(0.3, gt=0)
    # No retraining event within this long (data time) after the champion's training as_of.
    cooldown_days: float = Field(14.0, ge=0)
    # Evidently renders its HTML report on a sample of at most this many current rows.
    report_sample_rows: int = Field(20000, ge=100)
    # Emit evergreen.drift.detected on drift (the retrain-on-drift trigger listens); false for loops
    # that act on the decision themselves, such as the replay.
    emit_event: bool = True


class CanaryAnalysisConfig(_Strict):
    """Canary vs champion, from the gateway's metrics over each step's bake window."""

    # Fewer canary requests than this in a window: the analysis is inconclusive.
    min_requests: int = Field(100, ge=1)
    on_inconclusive: Literal["rollback", "proceed"] = "rollback"
    max_error_rate: float = Field(0.01, ge=0, le=1)
    # Canary p95 latency may exceed the champion's by this factor plus a fixed slack.
    max_latency_p95_ratio: float = Field(1.5, ge=1)
    latency_slack_ms: float = Field(20.0, ge=0)
    # PSI (beyond sampling noise) between the canary's and the champion's predicted-probability
    # histograms on the same traffic. Set to catch a broken canary (collapsed, inverted or shifted
    # scores), not the legitimate change a retrain after drift brings: realised quality judges that.
    max_prediction_psi: float = Field(1.0, gt=0)
    # Realised quality where labels came back through /feedback: mean log loss, canary vs champion.
    min_labelled: int = Field(50, ge=1)
    max_log_loss_increase: float = Field(0.05, ge=0)


class RolloutConfig(_Strict):
    # Roll a passing challenger out through the canary webhook instead of promoting it at once.
    enabled: bool = False
    webhook_url: str = "http://127.0.0.1:8800/rollout"
    # Where the canary analysis reads the gateway's Prometheus metrics; empty = <webhook host>/metrics.
    metrics_url: str = ""
    # The HMAC secret: a Prefect Secret block if named, else this environment variable. Never logged.
    secret_env: str = "EVERGREEN_ROLLOUT_SECRET"
    secret_block: str = ""
    steps: list[float] = Field(default_factory=lambda: [10.0, 25.0, 50.0, 100.0], min_length=1)
    bake_seconds: float = Field(60.0, ge=0)
    # Keep baking past bake_seconds until min_requests canary requests arrive, at most this long.
    max_bake_seconds: float = Field(300.0, ge=0)
    request_timeout_seconds: float = Field(5.0, gt=0)
    retries: int = Field(3, ge=0, le=10)
    backoff_seconds: float = Field(1.0, ge=0)
    analysis: CanaryAnalysisConfig = CanaryAnalysisConfig()

    @field_validator("steps")
    @classmethod
    def _steps_rise_to_100(cls, v: list[float]) -> list[float]:
        if any(not 0 < w <= 100 for w in v) or any(b <= a for a, b in zip(v, v[1:], strict=False)) or v[-1] != 100:
            raise ValueError("steps must be increasing traffic percentages in (0, 100] ending at 100")
        return v

    @property
    def resolved_metrics_url(self) -> str:
        if self.metrics_url:
            return self.metrics_url
        base = self.webhook_url.split("://", 1)
        host = base[1].split("/", 1)[0] if len(base) == 2 else base[0]
        return f"{base[0]}://{host}/metrics"


class ServingConfig(_Strict):
    """The reference serving gateway (deployments/gateway.py)."""

    host: str = "127.0.0.1"
    port: int = Field(8800, ge=0, le=65535)
    # How often the gateway re-reads the registry aliases (a webhook also triggers a re-read).
    reload_seconds: float = Field(10.0, gt=0)
    # Signed webhooks older or newer than this are rejected (replay window).
    signature_tolerance_seconds: float = Field(300.0, gt=0)
    max_batch: int = Field(1000, ge=1)


class EvergreenConfig(_Strict):
    home: Path = Path("../.evergreen")
    data: DataConfig
    problem: ProblemConfig
    features: FeaturesConfig
    window: WindowConfig = WindowConfig()
    tuning: TuningConfig = TuningConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig
    drift: DriftConfig = DriftConfig()
    rollout: RolloutConfig = RolloutConfig()
    serving: ServingConfig = ServingConfig()
    source_file: Path | None = Field(None, exclude=True)
    # The Feast snapshot this config reads or builds ("<project>@<stamp>"); None: the published one.
    feast_state: str | None = Field(None, exclude=True)
    digest: str = Field("", exclude=True)

    @field_validator("home")
    @classmethod
    def _home_not_empty(cls, v: Path) -> Path:
        if str(v).strip() in ("", "."):
            raise ValueError("home must name a folder for Evergreen's local state")
        return v

    # Derived locations of the embedded default stack.
    @property
    def tracking_uri(self) -> str:
        return self.registry.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts; None leaves it to the tracking server."""
        if self.registry.artifact_location:
            return self.registry.artifact_location
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.home / "mlartifacts").as_uri()

    # Feast state per project: two problems sharing one home keep their own tables and stores. Each
    # features run builds a snapshot <feast_root>/<project>@<stamp> and publishes it
    # (evergreen.feature_store.publish_snapshot): locally, <feast_root>/<project> is a link to it.
    @property
    def feast_root(self) -> str:
        return self.features.files_url or str(self.home / "feast")

    @property
    def feast_is_local(self) -> bool:
        return not self.feast_root.startswith("s3://")

    @property
    def published_feast_dir(self) -> Path:
        return Path(self.feast_root) / self.features.project

    @property
    def feast_dir(self) -> str:
        """The snapshot's folder (or S3 prefix); locally, without a snapshot named, the published link."""
        return f"{self.feast_root}/{self.feast_state or self.features.project}"

    @property
    def features_dir(self) -> str:
        return f"{self.feast_dir}/features"

    @property
    def feast_project(self) -> str:
        """The snapshot's Feast project: the problem's own, or one per snapshot in shared stores."""
        if not self.features.shared_stores:
            return self.features.project
        if self.feast_state is None:
            raise RuntimeError("a Feast snapshot must be named to open shared stores (feature_store.pinned)")
        return self.feast_state.replace("@", "_")

    @property
    def feast_registry(self) -> str:
        return self.features.registry_url or f"{self.feast_dir}/registry.db"

    @property
    def feast_online_store(self) -> str:
        return f"{self.feast_dir}/online.db"

    @property
    def optuna_storage(self) -> str:
        return self.tuning.storage or f"sqlite:///{self.home / 'optuna.db'}"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def serving_dir(self) -> Path:
        return self.home / "serving" / self.registry.model_name

    @property
    def problem_dir(self) -> Path:
        """The folder of the problem module: its Feast repo, suites and config live beside it."""
        return self.problem.module.parent

    @property
    def feast_repo(self) -> Path:
        return self.features.feast_repo or self.problem_dir / "feature_repo"

    @property
    def suites_dir(self) -> Path:
        return self.problem.suites or self.problem_dir / "expectations"


def expand_env(text: str) -> str:
    """Expand ${VAR} and ${VAR:-default}; an unset VAR without default is an error, not ''."""

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV.sub(repl, text)


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p).resolve()


# Paths a config file may hold, resolved against that file's folder before files are merged.
_PATHS = (("home",), ("features", "feast_repo"), ("problem", "module"), ("problem", "suites"))


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.startswith((".", "~"))


def _read_layer(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], str]:
    """One file's sections with its paths made absolute, merged over the file it extends."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found. Pass --config with an existing YAML file.")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to a file already read ({seen[0]})")
    text = path.read_text()
    try:
        expanded = expand_env(text)
    except KeyError as e:
        raise ConfigError(
            f"{path}: environment variable ${{{e.args[0]}}} is not set and has no default. "
            f"Set it, or write ${{{e.args[0]}:-value}} in the file."
        ) from None
    try:
        raw = yaml.safe_load(expanded) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    base = path.parent.resolve()
    for keys in _PATHS:
        node: dict[str, Any] = raw
        for k in keys[:-1]:
            child = node.get(k)
            node = child if isinstance(child, dict) else {}
        if isinstance(node.get(keys[-1]), str) and node[keys[-1]].strip():
            node[keys[-1]] = str(_resolve(base, Path(node[keys[-1]]).expanduser()))
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), str) and _looks_like_path(data["source"]):
        data["source"] = str(_resolve(base, Path(data["source"]).expanduser()))
    parent = raw.pop("extends", None)
    if parent is None:
        return raw, expanded
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must be the path of another config file, got {parent!r}")
    below, below_text = _read_layer(_resolve(base, Path(parent)), (*seen, path.resolve()))
    return _merge(below, raw), below_text + "\n" + expanded


def _merge(below: dict[str, Any], above: dict[str, Any]) -> dict[str, Any]:
    """Sections of ``above`` over ``below``, mapping by mapping; a list or a value replaces."""
    out = dict(below)
    for k, v in above.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path) -> EvergreenConfig:
    path = Path(path)
    raw, text = _read_layer(path, ())
    try:
        cfg = EvergreenConfig.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"]) or "<root>"
            got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
            lines.append(f"  {field}: {err['msg']}{got}")
        raise ConfigError(f"{path}: invalid configuration\n" + "\n".join(lines)) from None
    problem = cfg.problem
    if problem.entity_id not in problem.request:
        raise ConfigError(
            f"{path}: problem.request must hold the entity id '{problem.entity_id}' (the gateway keys "
            f"predictions and feedback by it); it has {sorted(problem.request)}"
        )
    return cfg.model_copy(
        update={"source_file": path.resolve(), "digest": hashlib.sha256(text.encode()).hexdigest()[:16]}
    )


def parse_as_of(value: datetime | str | None, latest: pd.Timestamp) -> pd.Timestamp:
    """``as_of`` as a UTC instant; None means ``latest`` (the moment after the last known outcome).
    A naive time is read as UTC."""
    if value is None:
        return latest
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
