"""Prefect tasks of Evergreen. Importing ``evergreen`` first sets its quiet, local-first defaults
(``evergreen.QUIET_DEFAULTS``) before Prefect, MLflow or GX are imported."""

import evergreen  # noqa: F401
