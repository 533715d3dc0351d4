"""A helper Python process that runs this package's functions off the flow's critical path.

``WorkerProcess`` starts ``python -m evergreen.worker`` at once; ``submit(fn, *args)`` sends a
module-level function and its arguments (pickled) and returns a future at once. The child runs the
jobs one at a time, in the order sent; a job's exception is raised by ``future.result()`` with the
child's traceback attached, and a child that dies fails every pending future with its exit code
and last output.

With ``nice=19`` the child only gets CPU the flow's own processes leave idle (while one core waits
for I/O, or between LightGBM's parallel sections); once the flow waits for a result, it is the only
thing runnable and gets a whole core. A job may keep results in the child (``keep``/``kept``) for
later jobs, so large inputs cross the pipe once.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
_HEADER = struct.Struct("!Q")


def send(stream: IO[bytes], obj: Any) -> None:
    write_frame(stream, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our own child process, over its own pipe


def portable_error(e: BaseException) -> tuple[BaseException, str]:
    """The exception and its traceback text, as they can cross a pipe (as text if it does not pickle)."""
    import traceback

    trace = traceback.format_exc()
    try:
        pickle.dumps(e)
    except Exception:  # noqa: BLE001 - an exception that does not pickle travels as text
        e = RuntimeError(f"{type(e).__name__}: {e}")
    return e, trace


class WorkerProcess:
    """A child process running submitted jobs in order. Use it as a context manager or call :meth:`close`."""

    def __init__(self, name: str, nice: int = 0) -> None:
        self.name = name
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "evergreen.worker", str(nice)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
        )
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._pending: queue.Queue[Future[Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._dead: str | None = None
        # Writes can block while the child is busy: a thread writes, so submit() returns at once.
        self._writer = threading.Thread(target=self._write_loop, name=f"{name}-send", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-receive", daemon=True)
        self._writer.start()
        self._reader.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` in the child after the jobs already sent. The arguments are
        pickled now, so later changes to them do not reach the job."""
        data = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        future: Future[Any] = Future()
        with self._lock:
            if self._dead is not None:
                future.set_exception(RuntimeError(self._dead))
                return future
            self._pending.put(future)
            self._outbox.put(data)
        return future

    def _write_loop(self) -> None:
        assert self._proc.stdin is not None
        while (data := self._outbox.get()) is not None:
            try:
                write_frame(self._proc.stdin, data)
            except (BrokenPipeError, OSError):
                return  # the reader reports the death to every pending job
        try:
            self._proc.stdin.close()
        except OSError:
            pass

    def _read_loop(self) -> None:
        assert self._proc.stdout is not None
        while True:
            try:
                status, payload = receive(self._proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            future = self._pending.get()
            if status == "ok":
                future.set_result(payload)
            else:
                error, trace = payload
                error.add_note(f"raised in the {self.name} process:\n{trace}")
                future.set_exception(error)
        with self._lock:
            self._dead = self._died()
            while not self._pending.empty():
                self._pending.get().set_exception(RuntimeError(self._dead))

    def _died(self) -> str:
        code = self._proc.wait()
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace")[-3000:]
        return (
            f"the {self.name} process (python -m evergreen.worker) ended with exit code {code} "
            f"before finishing its jobs; its last output:\n{tail}"
        )

    def close(self, timeout: float = 60) -> None:
        """Let the child finish the jobs sent, then end it (killed if it hangs past ``timeout``)."""
        self._outbox.put(None)
        self._writer.join(timeout)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ── in the child ─────────────────────────────────────────────────────────────────────────────────
_kept: dict[str, Any] = {}


def keep(key: str, value: Any) -> None:
    """A job that stores ``value`` in the child for later jobs (see :func:`kept`)."""
    _kept[key] = value


def kept(key: str) -> Any:
    try:
        return _kept[key]
    except KeyError:
        raise KeyError(f"nothing kept under {key!r} in this worker process; keep() it in an earlier job") from None


def _serve(nice: int) -> None:
    if nice:
        os.nice(nice)
    jobs = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the reply stream
    while True:
        try:
            fn, args, kwargs = receive(jobs)
        except EOFError:
            # Every reply is written and flushed: skip the interpreter's teardown, which the parent
            # would otherwise wait for.
            sys.stderr.flush()
            os._exit(0)
        try:
            data = pickle.dumps(("ok", fn(*args, **kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - sent to the parent, which raises it
            data = pickle.dumps(("error", portable_error(e)), protocol=pickle.HIGHEST_PROTOCOL)
        write_frame(replies, data)


if __name__ == "__main__":
    # Through the module's real name, so keep()/kept() jobs share one store.
    from evergreen.worker import _serve as serve

    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
