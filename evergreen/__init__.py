"""Evergreen's Prefect-free core.

Importing it sets local-first defaults, each only where the environment leaves it unset: no library
calls out to its vendor (usage analytics, telemetry), and no progress bars fill the flow logs.
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
