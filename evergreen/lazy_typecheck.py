"""Feast's run-time type checks, paid for when used instead of at import.

Feast decorates its classes with typeguard's ``@typechecked``. That decorator instruments every
annotated method when the class is defined, and each instrumentation re-reads, re-parses and
recompiles the whole module's source: about 3 s of the 3.5 s ``import feast`` takes, in every
process that touches Feast (training, drift, serving), mostly for methods that process never calls.
Upstream: agronholm/typeguard#468 ("Using typecheck decorator slows module import dramatically"),
which proposes this very deferral.

:func:`install` makes the decorator lazy: a method is instrumented the first time it is called (by
typeguard itself, once, then reused), so every call is still checked exactly as before, and a
process only pays for the methods it uses. The entry points call it (``flows/__init__.py``,
``deployments/__init__.py``, the ``evergreen`` command) before anything imports Feast; Evergreen's
own modules import Feast inside the functions that use it, so that order holds whatever imports what.
It relies on ``typeguard.typechecked``'s public signature in the typeguard range pinned in
pyproject.toml; outside that range, or once Feast is imported, it warns and changes nothing.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import warnings
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

SUPPORTED_TYPEGUARD = (4,)  # major versions whose ``typechecked(target=None, **options)`` this wraps

_lock = threading.Lock()
_installed = False


def install() -> bool:
    """Make ``typeguard.typechecked`` lazy; returns whether Feast will see the lazy one."""
    global _installed
    with _lock:
        if _installed:
            return "feast" not in sys.modules or _feast_is_lazy()
        if "feast" in sys.modules:
            warnings.warn(
                "Feast was imported before evergreen.lazy_typecheck.install(): its type checks stay eager "
                "(about 3 s of import); call install() at the entry point, before anything imports Feast",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        major = int(version("typeguard").split(".")[0])
        if major not in SUPPORTED_TYPEGUARD:
            warnings.warn(
                f"typeguard {version('typeguard')} is outside the range evergreen.lazy_typecheck supports "
                f"(major {SUPPORTED_TYPEGUARD}): Feast's type checks stay eager",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        import typeguard

        eager = typeguard.typechecked
        typeguard.typechecked = functools.partial(_typechecked, eager=eager)
        _installed = True
    return True


def _feast_is_lazy() -> bool:
    feast = sys.modules["feast"]
    return hasattr(getattr(getattr(feast, "Entity", None), "__init__", None), "__typeguard_lazy__")


def _typechecked(target: Any = None, *, eager: Callable[..., Any], **options: Any) -> Any:
    """Same contract as ``typeguard.typechecked`` (bare, with options, on classes or functions)."""
    if target is None:
        return functools.partial(_typechecked, eager=eager, **options)
    if not __debug__:
        return target
    if not inspect.isclass(target):
        return _lazy(target, eager, options)
    # The members typeguard would instrument, each replaced by a function that instruments on first call.
    for key, attr in list(target.__dict__.items()):
        if _method_of(attr, target):
            setattr(target, key, _lazy(attr, eager, options))
        elif isinstance(attr, classmethod | staticmethod) and _method_of(attr.__func__, target):
            setattr(target, key, _lazy(attr, eager, options))
        elif isinstance(attr, property):
            parts: dict[str, Any] = {
                name: _lazy(f, eager, options) if _method_of(f, target) else f
                for name, f in (("fget", attr.fget), ("fset", attr.fset), ("fdel", attr.fdel))
            }
            setattr(target, key, attr.__class__(**parts, doc=attr.__doc__))
    return target


def _method_of(obj: object, cls: type) -> bool:
    return (
        inspect.isfunction(obj)
        and obj.__module__ == cls.__module__
        and obj.__qualname__.startswith(cls.__qualname__ + ".")
    )


def _lazy(func: Any, eager: Callable[..., Any], options: dict[str, Any]) -> Any:
    if isinstance(func, classmethod | staticmethod):  # the same wrapper around a lazy function
        return func.__class__(_lazy(func.__func__, eager, options))
    instrumented: list[Callable[..., Any]] = []
    lock = threading.Lock()

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if not instrumented:
            with lock:
                if not instrumented:
                    instrumented.append(eager(func, **options))
        return instrumented[0](*args, **kwargs)

    checked.__typeguard_lazy__ = func  # type: ignore[attr-defined]
    return checked
