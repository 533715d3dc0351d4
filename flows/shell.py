"""Running a flow from a shell: its result on stdout, or a one-paragraph error and an exit code.

Exit codes: 0 done, 1 rolled back, 2 the input was at fault (config, data, a broken contract, an
unknown version), 3 a server the run needs did not answer; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from prefect.exceptions import ParameterTypeError

from evergreen.config import ConfigError
from evergreen.problem import DataError
from evergreen.registry import RegistryError, TrackingUnavailable
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

# Not a bug either: the server is named in the message and is the user's to start.
UNAVAILABLE = (TrackingUnavailable,)

T = TypeVar("T")


class InputErrorsWithoutTraceback(logging.Filter):
    """On the console, the engine's log lines about a bad input keep their message and lose the
    traceback: the input (or a stopped server) is the user's to fix, not a bug. The flow run's own
    logs keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], (*USER_ERRORS, *UNAVAILABLE)):
            record.exc_info, record.exc_text = None, None
        return True


class WithoutTaskCompletions(logging.Filter):
    """On the console, a task run's "Finished in state Completed()" line is left out: each flow
    logs its stages with their times, and the run's own logs (the Prefect UI) keep every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "prefect.task_runs"
            and record.levelno == logging.INFO
            and record.getMessage().startswith("Finished in state Completed(")
        )


def run_flow(call: Callable[[], T], render: Callable[[T], str]) -> int:
    """Run a flow; print its result, or the error alone when the input was at fault (exit 2)."""
    console = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    filters = [InputErrorsWithoutTraceback(), WithoutTaskCompletions()]
    for handler in console:
        for f in filters:
            handler.addFilter(f)
    try:
        result = call()
    except USER_ERRORS as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    except UNAVAILABLE as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 3
    except RolledBack as e:
        print(f"\nrolled back: {e}", file=sys.stderr)
        return 1
    finally:
        for handler in console:
            for f in filters:
                handler.removeFilter(f)
    print(render(result))
    return 0
