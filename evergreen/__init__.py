"""Evergreen's Prefect-free core.

Importing it sets local-first defaults, each only where the environment leaves it unset: no library
calls out to its vendor (usage analytics, telemetry), and no progress bars fill the flow logs.

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

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow 3 reports usage and fetches its config over the network
    "DO_NOT_TRACK": "true",  # the cross-tool convention: Prefect's SDK analytics, MLflow, Evidently
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

for _name, _value in QUIET_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
