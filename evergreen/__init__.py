"""Evergreen's Prefect-free core.

Importing it sets local-first defaults, each only where the environment leaves it unset: no library
calls out to its vendor (usage analytics, telemetry), no progress bars fill the flow logs, a stopped
MLflow server fails a run in seconds rather than minutes, and Prefect keeps its state in Evergreen's
home rather than ``~/.prefect`` (``prefect_defaults``). Every
flow entry point imports this package before Prefect (``flows/__init__.py``), and Prefect reads
these variables when it is imported.

Imports sit at the top of each module, except five heavy packages that some paths through a module
never use; those are imported inside the functions that need them:
  - great_expectations (seconds of import): only validation runs it (``evergreen.validation``);
  - evidently: only the drift flow's HTML report (``evergreen.drift_report``);
  - feast: only feature-store calls, and always after ``evergreen.lazy_typecheck.install()`` has run
    at the entry point, which a module-level import could precede (``evergreen.feature_store``);
  - mlflow in ``evergreen.registry``: its errors and constants are read by every flow's shell entry
    point, the features flow included, which never talks to MLflow;
  - matplotlib: only when a picture is drawn (``evergreen.plots``, the tuning and replay pictures).
"""

import os
from pathlib import Path

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow 3 reports usage and fetches its config over the network
    "DO_NOT_TRACK": "true",  # the cross-tool convention: Prefect's SDK analytics, MLflow, Evidently
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

# MLflow retries a request 7 times with doubling waits (over 4 minutes) before it gives up on a
# stopped server; 3 retries within ~7 s still ride out a restart, and a run fails while it is watched.
FAIL_FAST_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}

for _name, _value in {**QUIET_DEFAULTS, **FAIL_FAST_DEFAULTS}.items():
    os.environ.setdefault(_name, _value)


def default_home() -> Path:
    """Evergreen's home when no config names another: ``$EVERGREEN_HOME``, else ``<repo>/.evergreen``."""
    env = os.environ.get("EVERGREEN_HOME", "").strip()
    return Path(env).expanduser().absolute() if env else Path(__file__).resolve().parent.parent / ".evergreen"


def prefect_defaults() -> dict[str, str]:
    """Prefect settings a flow run needs on this machine, applied where the environment leaves them unset.

    PREFECT_HOME: Prefect's database, profiles and logs go to ``<home>/prefect`` with the rest of the
    local state (the home from EVERGREEN_HOME or the default: a config read later cannot move it, as
    Prefect is imported first). The ephemeral server the first flow of a process starts gets 120 s to
    come up instead of 20 s: on a loaded machine its start takes longer than 20 s.
    """
    return {
        "PREFECT_HOME": str(default_home() / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }


for _name, _value in prefect_defaults().items():
    os.environ.setdefault(_name, _value)
