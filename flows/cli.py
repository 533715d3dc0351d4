"""Shell entry points for flows: clear one-paragraph errors for bad input, exit codes for scripts."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from evergreen.config import ConfigError
from evergreen.data import DataError
from evergreen.registry import RegistryError
from evergreen.rollout import RolledBack
from evergreen.validation import ValidationFailed

USER_ERRORS = (ConfigError, DataError, ValidationFailed, RegistryError, ValueError, FileNotFoundError)


def run_flow(call: Callable[[], Any], render: Callable[[Any], str]) -> int:
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
