"""Data contracts: Great Expectations 1.x suites kept in ``configs/expectations/`` run on pandas batches.

A failed suite produces a short summary (expectation, column, unexpected count) for people and the
full GX result as JSON for tools; the caller stops the run on failure.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from evergreen.gcpolicy import hold_collector

ROOT = Path(__file__).resolve().parent.parent
SUITES_DIR = ROOT / "configs" / "expectations"


@dataclass
class Failure:
    expectation: str
    column: str | None
    unexpected_count: int | None
    unexpected_percent: float | None
    observed: Any
    why: str | None

    def line(self) -> str:
        where = f"column '{self.column}'" if self.column else "table"
        count = (
            f", {self.unexpected_count} unexpected ({self.unexpected_percent:.2f}%)" if self.unexpected_count else ""
        )
        obs = f", observed {self.observed!r}" if self.observed is not None and not self.unexpected_count else ""
        return f"{self.expectation} on {where}{count}{obs}"


@dataclass
class SuiteResult:
    suite: str
    success: bool
    evaluated: int
    rows: int
    failures: list[Failure] = field(default_factory=list)
    report_path: Path | None = None

    def summary(self) -> str:
        head = (
            f"suite '{self.suite}' on {self.rows} rows: {self.evaluated - len(self.failures)}/{self.evaluated} passed"
        )
        return "\n".join([head, *(f"  - {f.line()}" for f in self.failures)])


class ValidationFailed(RuntimeError):
    """A batch broke its data contract: nothing downstream may run on it."""

    def __init__(self, results: list[SuiteResult]):
        self.results = results
        failed = [r for r in results if not r.success]
        lines = ["Data validation failed; nothing was trained, registered or promoted."]
        for r in failed:
            lines.append(r.summary())
            if r.report_path:
                lines.append(f"  full result: {r.report_path}")
        lines.append(
            "Fix the batch (or, if the data is right and the contract wrong, the suite in configs/expectations/)."
        )
        super().__init__("\n".join(lines))


def load_suite_spec(name: str, suites_dir: Path = SUITES_DIR) -> dict[str, Any]:
    path = suites_dir / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expectation suite '{name}' not found")
    spec: dict[str, Any] = json.loads(path.read_text())
    return spec


# Expectations about the table's set of columns need every column; a row condition may name any.
_WHOLE_TABLE = ("expect_table_column", "expect_column_to_exist")
_COLUMN_KEYS = ("column", "column_A", "column_B", "column_list")


def suite_columns(spec: dict[str, Any]) -> list[str] | None:
    """The columns a suite reads, or None when it needs the whole table."""
    columns: dict[str, None] = {}
    for e in spec["expectations"]:
        kwargs = e.get("kwargs", {})
        if e["type"].startswith(_WHOLE_TABLE) or kwargs.get("row_condition"):
            return None
        for key in _COLUMN_KEYS:
            value = kwargs.get(key)
            for col in [value] if isinstance(value, str) else value or []:
                columns[col] = None
    return list(columns)


def suite_view(frame: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Only the columns the suite reads (GX copies whole rows while it filters: 43 columns where 8
    are checked cost 0.5 s instead of 0.15 s). A column the frame lacks stays missing, and fails."""
    wanted = suite_columns(spec)
    if wanted is None:
        return frame
    present = [c for c in wanted if c in frame.columns]
    return frame if len(present) == len(frame.columns) else frame[present]


def _failure(r: Any) -> Failure:
    cfg = r.expectation_config
    res = r.result or {}
    return Failure(
        expectation=cfg.type,
        column=cfg.kwargs.get("column"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        observed=res.get("observed_value"),
        why=(cfg.meta or {}).get("why"),
    )


def _import_gx() -> Any:
    """GX, imported with its usage analytics off (``evergreen.QUIET_DEFAULTS``: a flow must not call out)."""
    import great_expectations as gx

    return gx


def validate_frames(
    frames: dict[str, pd.DataFrame], report_dir: Path, suites_dir: Path = SUITES_DIR, result_format: str | None = None
) -> list[SuiteResult]:
    """Run the suite named like each frame; write each full result to ``report_dir/<suite>.json``.

    ``result_format``: GX's, for every run; by default BASIC, and SUMMARY again for a failing suite."""
    gx = _import_gx()
    context = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("evergreen")
    report_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name, frame in frames.items():
        spec = load_suite_spec(name, suites_dir)
        suite = context.suites.add(gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"]))
        batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        vd = gx.ValidationDefinition(name=name, data=batch_def, suite=suite)
        # Timestamps with time zones confuse some GX metrics; the contracts check them for nulls only.
        view = suite_view(frame, spec)
        # A passing suite is reported with BASIC results (observed values and counts); a failing one is
        # run again with SUMMARY, which adds how often each unexpected value occurs and where. SUMMARY
        # costs about 40% more CPU on a passing batch, where those lists are empty.
        result = vd.run(batch_parameters={"dataframe": view}, result_format=result_format or "BASIC")
        if not result.success and result_format is None:
            result = vd.run(batch_parameters={"dataframe": view}, result_format="SUMMARY")
        path = report_dir / f"{name}.json"
        path.write_text(json.dumps(result.to_json_dict(), indent=1, default=str))
        failures = [_failure(r) for r in result.results if not r.success]
        results.append(SuiteResult(name, bool(result.success), len(result.results), len(frame), failures, path))
    return results


def require_valid(results: list[SuiteResult]) -> None:
    if not all(r.success for r in results):
        raise ValidationFailed(results)


# ── GX in its own process ────────────────────────────────────────────────────────────────────────
# Importing GX costs about 2 s of pure Python (its expectation registry, SciPy, Altair). In the
# training flow it would run beside Feast's own imports and the retrieval, and two threads of pure
# Python in one process take turns on the GIL: the cost lands on the critical path anyway. A process
# of its own imports GX on the other core while the flow loads data and retrieves features.

_HEADER = struct.Struct("!Q")


def _send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our own child process, over its own pipe


class ValidatorProcess:
    """Runs :func:`validate_frames` in a child process started at once (it imports GX right away).

    Same results, same report files as the in-process call. Use it as a context manager, or call
    :meth:`close`; requests from several threads are served one at a time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "evergreen.validation"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
        )

    def validate(
        self, frames: dict[str, pd.DataFrame], report_dir: Path, suites_dir: Path = SUITES_DIR
    ) -> list[SuiteResult]:
        # Only the columns each suite reads cross the pipe; the row counts are the frames' own.
        views = {name: self._view(name, f, suites_dir) for name, f in frames.items()}
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            try:
                _send(self._proc.stdin, (views, report_dir, suites_dir))
                status, payload = _receive(self._proc.stdout)
            except (EOFError, BrokenPipeError) as e:
                raise RuntimeError(self._died()) from e
        if status == "error":
            error, trace = payload
            error.add_note(f"raised in the validation process:\n{trace}")
            raise error
        results: list[SuiteResult] = payload
        return results

    @staticmethod
    def _view(name: str, frame: pd.DataFrame, suites_dir: Path) -> pd.DataFrame:
        try:
            return suite_view(frame, load_suite_spec(name, suites_dir))
        except (OSError, ValueError, KeyError):  # the child reports a missing or broken suite, as in-process
            return frame

    def _died(self) -> str:
        code = self._proc.wait()
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace")[-3000:]
        return (
            f"the validation process (python -m evergreen.validation) ended unexpectedly with exit code {code}; "
            f"its last output:\n{tail}"
        )

    def close(self) -> None:
        """Tell the child to finish (end of its input) and wait for it; kill it if it hangs."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:  # a child that died leaves a broken pipe: nothing to deliver
                pass
        self._stderr.close()

    def __enter__(self) -> ValidatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Imported by GX at its own import, used only by expectations Evergreen's suites may never run
# (distribution tests, KL-divergence charts): about 1 CPU-s of GX's 2.5 s import.
DEFERRED_IMPORTS = ("scipy.stats", "altair")


class _DeferredImports(importlib.abc.MetaPathFinder):
    """Loads the named modules lazily (:class:`importlib.util.LazyLoader`): each one's code runs on the
    first attribute access instead of at import, so an expectation that needs it still gets it whole."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = frozenset(names)

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


def defer_unused_imports() -> None:
    """Install the :data:`DEFERRED_IMPORTS` finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _DeferredImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _DeferredImports(DEFERRED_IMPORTS))


def _serve() -> None:
    """The child's loop: one request (frames, report dir, suites dir) in, one reply out, until EOF."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the reply stream
    with hold_collector() as collector:  # GX's import: 0.24 s of the collector's time otherwise
        defer_unused_imports()
        _import_gx()  # now, while the parent does other work
        collector.settle()
        _reply_until_eof(requests, replies)


def _reply_until_eof(requests: IO[bytes], replies: IO[bytes]) -> None:
    while True:
        try:
            frames, report_dir, suites_dir = _receive(requests)
        except EOFError:
            # Every reply is written and flushed: skip the interpreter's teardown of GX's thousands of
            # modules (0.5-0.9 s) that the parent would wait for.
            sys.stderr.flush()
            os._exit(0)
        try:
            reply: tuple[str, Any] = ("ok", validate_frames(frames, report_dir, suites_dir))
        except Exception as e:  # noqa: BLE001 - sent to the parent, which raises it
            import traceback

            trace = traceback.format_exc()
            try:
                pickle.dumps(e)
            except Exception:  # noqa: BLE001 - an exception that does not pickle travels as text
                e = RuntimeError(f"{type(e).__name__}: {e}")
            reply = ("error", (e, trace))
        _send(replies, reply)


if __name__ == "__main__":
    # Through the module's real name: the results pickle as evergreen.validation.SuiteResult.
    from evergreen.validation import _serve as serve

    serve()
