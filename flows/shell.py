"""Running a flow from a shell: its result on stdout, or a one-paragraph error and an exit code.

Exit codes: 0 done, 1 rolled back, 2 the input was at fault (config, data, a broken contract, an
unknown version); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from prefect.exceptions import ParameterTypeError

from evergreen.config import ConfigError
from evergreen.problem import DataError
from evergreen.registry import RegistryError
from evergreen.rollout import RolledBack
from evergreen.validation import ValidationFailed

USER_ERRORS = (
    ConfigError,
    DataError,
    ValidationFailed,
    RegistryError,
    ParameterTypeError,
    ValueError,
    FileNotFoundError,
)

T = TypeVar("T")


def run_flow(call: Callable[[], T], render: Callable[[T], str]) -> int:
    """Run a flow; print its result, or the error alone when the input was at fault (exit 2)."""
    try:
        result = call()
    except USER_ERRORS as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    except RolledBack as e:
        print(f"\nrolled back: {e}", file=sys.stderr)
        return 1
    print(render(result))
    return 0
