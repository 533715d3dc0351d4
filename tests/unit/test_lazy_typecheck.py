"""Feast's typeguard checks made lazy: still enforced on every call, instrumented on first use.

Each case runs in a fresh interpreter, since the decorator has to be lazy before Feast is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MODULE = """
from typeguard import typechecked


@typechecked
class Box:
    def __init__(self, size: int) -> None:
        self.size = size

    def grow(self, by: int) -> int:
        return self.size + by

    @classmethod
    def of(cls, size: int) -> "Box":
        return cls(size)

    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @property
    def label(self) -> str:
        return self.size  # wrong on purpose: the return check must catch it


@typechecked
def area(w: int, h: int) -> int:
    return w * h


@typechecked()
def first(xs: list[int]) -> int:
    return xs[0]
"""


def run(code: str, tmp_path: Path) -> str:
    (tmp_path / "boxes.py").write_text(MODULE)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_lazy_decorator_checks_every_kind_of_member_as_typeguard_does(tmp_path: Path) -> None:
    out = run(
        """
        from evergreen import lazy_typecheck
        assert lazy_typecheck.install()
        from typeguard import TypeCheckError
        import boxes

        def fails(f, *a):
            try:
                f(*a)
            except TypeCheckError as e:
                return str(e)
            return None

        # Nothing was instrumented at import: every member is a lazy stand-in.
        assert hasattr(boxes.Box.__init__, "__typeguard_lazy__")
        assert hasattr(boxes.area, "__typeguard_lazy__")
        # Right types pass, wrong ones fail, for each kind of member.
        b = boxes.Box(2)
        assert b.grow(3) == 5 and boxes.Box.of(4).size == 4 and boxes.Box.double(3) == 6
        assert boxes.area(2, 3) == 6 and boxes.first([1]) == 1
        assert fails(boxes.Box, "2"), "constructor argument"
        assert fails(b.grow, 1.5), "method argument"
        assert fails(boxes.Box.of, "x"), "classmethod argument"
        assert fails(boxes.Box.double, "x"), "staticmethod argument"
        assert fails(lambda: b.label), "property return value"
        assert fails(boxes.area, 2, "3"), "function argument"
        # The checks stay on after the first call (the instrumented code is reused, not dropped).
        assert fails(boxes.area, "2", 3) and boxes.area(4, 5) == 20
        print("ok")
        """,
        tmp_path,
    )
    assert out.strip() == "ok"


def test_feast_keeps_its_argument_checks(tmp_path: Path) -> None:
    out = run(
        """
        from evergreen import lazy_typecheck
        lazy_typecheck.install()
        import feast
        from typeguard import TypeCheckError
        assert hasattr(feast.Entity.__init__, "__typeguard_lazy__")
        e = feast.Entity(name="flight", join_keys=["flight_id"])
        assert e.join_key == "flight_id"
        try:
            feast.Entity(name=123, join_keys=["flight_id"])
        except TypeCheckError as err:
            print("rejected:", err)
        """,
        tmp_path,
    )
    assert out.startswith("rejected:") and "name" in out


def test_install_after_feast_is_imported_warns_that_it_changed_nothing(tmp_path: Path) -> None:
    out = run(
        """
        import warnings
        import feast
        from evergreen import lazy_typecheck
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            installed = lazy_typecheck.install()
        print(installed, hasattr(feast.Entity.__init__, "__typeguard_lazy__"))
        print(caught[0].category.__name__, "Feast was imported before" in str(caught[0].message))
        """,
        tmp_path,
    )
    assert out.split() == ["False", "False", "RuntimeWarning", "True"]


def test_flow_entry_points_install_it_before_feast_loads(tmp_path: Path) -> None:
    """A deployment loads a flow by file path: the flow's own imports must install it before Feast."""
    out = run(
        """
        from prefect.flows import load_flow_from_entrypoint
        load_flow_from_entrypoint("flows/drift.py:drift")
        import feast
        print(hasattr(feast.Entity.__init__, "__typeguard_lazy__"))
        """,
        tmp_path,
    )
    assert out.split()[-1] == "True"
