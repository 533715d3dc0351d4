"""One-command local stack: Prefect server, a process worker, an MLflow tracking server.

    python -m deployments.stack up       # start what is not running, wait until healthy, print URLs
    python -m deployments.stack status   # per component: running/stopped, pid, health, URL
    python -m deployments.stack down     # stop the worker, then the servers (idempotent)

Each component runs in the background in its own process group (so `down` also reaches uvicorn
children), with a log file and a pid file in ``<home>/stack/``. ``<home>`` is ``--home``, else
``$EVERGREEN_HOME``, else ``<repo>/.evergreen``: the same folder the flows use for their local state,
so the MLflow server serves the store the embedded default writes (``<home>/mlflow.db``,
``<home>/mlartifacts``). Linux and macOS (process groups, signals).

``status`` and ``down`` without ``--home`` act on the default home's stack, or, when none runs
there, on the one stack started from this checkout with another home (found in /proc: each component
carries its home in its environment; Linux only). With several, they name the ``--home`` to pass.

Standard library plus httpx only: this module must not import Prefect or MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict

import httpx

from evergreen import QUIET_DEFAULTS, default_home

REPO_ROOT = Path(__file__).resolve().parent.parent
POOL_NAME = "evergreen-process"
POOL_TYPE = "process"
WORKER_NAME = "evergreen-worker"

PREFECT_SERVER = "prefect-server"
PREFECT_WORKER = "prefect-worker"
MLFLOW_SERVER = "mlflow-server"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
DEFAULT_WORKER_POLL = 10.0
DEFAULT_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
LOG_TAIL_LINES = 40
STATE_FILE = "stack.json"
# Set in every component's environment, so that `status` and `down` without --home can find a stack
# started with another home (from /proc; see running_homes). The checkout is part of the mark: another
# checkout's stack is not this one's business.
HOME_MARK = "EVERGREEN_STACK_HOME"
REPO_MARK = "EVERGREEN_STACK_REPO"
LOCAL_DEFAULT = "local default"


class StackError(RuntimeError):
    """A component failed; carries the log to look at."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class StackConfig:
    home: Path
    host: str = DEFAULT_HOST
    prefect_port: int = DEFAULT_PREFECT_PORT
    mlflow_port: int = DEFAULT_MLFLOW_PORT
    worker_poll: float = DEFAULT_WORKER_POLL

    @property
    def state_dir(self) -> Path:
        return self.home / "stack"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def client_host(self) -> str:
        """Where clients connect: a wildcard bind address is reached through loopback."""
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "[::1]"
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{self.client_host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_ui_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.client_host}:{self.mlflow_port}"

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def save(self) -> None:
        body = {**asdict(self), "home": str(self.home)}
        self.state_file.write_text(json.dumps(body, indent=2) + "\n")

    @classmethod
    def load(cls, home: Path) -> StackConfig | None:
        path = home / "stack" / STATE_FILE
        try:
            body: dict[str, Any] = json.loads(path.read_text())
            return cls(
                home=home,
                host=str(body["host"]),
                prefect_port=int(body["prefect_port"]),
                mlflow_port=int(body["mlflow_port"]),
                worker_poll=float(body.get("worker_poll", DEFAULT_WORKER_POLL)),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise StackError(f"{path}: unreadable stack state ({exc}); delete it and run `up` again") from exc


@dataclass(frozen=True)
class Component:
    name: str
    # argv fragments that identify the process in /proc/<pid>/cmdline (guards against a reused pid)
    markers: tuple[str, ...]
    # signal to send when the first SIGTERM did not stop it, and how long to wait before sending it
    second_signal: signal.Signals
    second_after: float

    def pid_file(self, cfg: StackConfig) -> Path:
        return cfg.state_dir / f"{self.name}.pid"

    def log_file(self, cfg: StackConfig) -> Path:
        return cfg.state_dir / f"{self.name}.log"

    def url(self, cfg: StackConfig) -> str:
        if self.name == MLFLOW_SERVER:
            return cfg.mlflow_url
        if self.name == PREFECT_SERVER:
            return cfg.prefect_ui_url
        return f"{cfg.prefect_ui_url}/work-pools/work-pool/{POOL_NAME}"


# A Prefect worker handles the first SIGTERM by sending itself SIGINT and keeps running; the second
# signal makes it exit. The servers stop on the first SIGTERM.
COMPONENTS: dict[str, Component] = {
    PREFECT_SERVER: Component(PREFECT_SERVER, ("prefect", "server", "start"), signal.SIGINT, 10.0),
    PREFECT_WORKER: Component(PREFECT_WORKER, ("prefect", "worker", "start"), signal.SIGINT, 2.0),
    MLFLOW_SERVER: Component(MLFLOW_SERVER, ("mlflow", "server"), signal.SIGINT, 10.0),
}
START_ORDER = (PREFECT_SERVER, MLFLOW_SERVER, PREFECT_WORKER)


# --- processes ---------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc, or None where /proc is not available or the pid is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[2])


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] not in ("Z", "X")  # a zombie has exited


def _reap(pid: int) -> None:
    """Collect an exited child of this process (only when `up` stops what it just started)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def group_alive(pgid: int) -> bool:
    """True while any live (non-zombie) process is left in the group."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _environ(pid: int) -> dict[str, str]:
    """A process's environment from /proc (empty if unreadable: another user's, or gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def running_homes() -> list[Path]:
    """Homes of the stacks started from this checkout that have a component running now.

    Read from the environment of the live processes (HOME_MARK), so it needs no record that could go
    stale; each home found is confirmed by its own pid files. Empty where there is no /proc (macOS).
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    marked = set()
    for entry in proc.iterdir():
        if entry.name.isdigit():
            env = _environ(int(entry.name))
            if env.get(REPO_MARK) == str(REPO_ROOT) and env.get(HOME_MARK):
                marked.add(Path(env[HOME_MARK]))
    return sorted(home for home in marked if _any_running(StackConfig(home=home)))


def _any_running(cfg: StackConfig) -> bool:
    """A component of this home is running, or has left children behind (orphaned)."""
    for comp in COMPONENTS.values():
        pid = read_pid(comp, cfg)
        if pid is not None and (running_pid(comp, cfg) is not None or group_alive(pid)):
            return True
    return False


def _matches(comp: Component, pid: int) -> bool:
    argv = _cmdline(pid)
    if argv is None:
        return True  # no /proc: trust the pid file
    words = [Path(a).name for a in argv]
    return all(m in words for m in comp.markers)


def read_pid(comp: Component, cfg: StackConfig) -> int | None:
    try:
        return int(comp.pid_file(cfg).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running_pid(comp: Component, cfg: StackConfig) -> int | None:
    """The component's pid if its pid file names a live process that is this component."""
    pid = read_pid(comp, cfg)
    if pid is None or not pid_alive(pid) or not _matches(comp, pid):
        return None
    return pid


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_groups_gone(pgids: Sequence[int], deadline: float) -> list[int]:
    """Wait until every group is empty or the deadline passes; returns the groups still alive."""
    left = list(pgids)
    while True:
        left = [p for p in left if group_alive(p)]
        for pgid in pgids:
            _reap(pgid)  # the leader may be our own child (a failed `up` stopping what it started)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def stop_components(comps: Sequence[Component], cfg: StackConfig, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Stop the components' process groups together: SIGTERM, a second signal, then SIGKILL.

    Returns one line per component describing what happened. Removes the pid files.
    """
    lines: list[str] = []
    groups: dict[int, Component] = {}
    for comp in comps:
        pid = read_pid(comp, cfg)
        if pid is None:
            lines.append(f"{comp.name}: not running")
            continue
        # A pid that is alive but is some other program (pid reused after a reboot): not ours.
        if pid_alive(pid) and not _matches(comp, pid):
            lines.append(f"{comp.name}: not running (stale pid file: pid {pid} is another program)")
            comp.pid_file(cfg).unlink(missing_ok=True)
            continue
        # The leader may be gone while its children (uvicorn) still hold the group: stop those too.
        if not group_alive(pid):
            lines.append(f"{comp.name}: not running (removed stale pid file, pid {pid})")
            comp.pid_file(cfg).unlink(missing_ok=True)
            continue
        groups[pid] = comp

    if groups:
        start = time.monotonic()
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        how = dict.fromkeys(groups, "SIGTERM")
        # Second signal, per component, after its own grace period.
        for pgid, comp in sorted(groups.items(), key=lambda kv: kv[1].second_after):
            left = _wait_groups_gone([pgid], start + comp.second_after)
            if left:
                _signal_group(pgid, comp.second_signal)
                how[pgid] = f"SIGTERM + {comp.second_signal.name}"
        left = _wait_groups_gone(list(groups), start + timeout)
        for pgid in left:
            _signal_group(pgid, signal.SIGKILL)
            how[pgid] += " + SIGKILL"
        left = _wait_groups_gone(left, time.monotonic() + 10.0)
        for pgid, comp in groups.items():
            if pgid in left:
                lines.append(f"{comp.name}: FAILED to stop process group {pgid} (even with SIGKILL)")
                continue
            comp.pid_file(cfg).unlink(missing_ok=True)
            lines.append(f"{comp.name}: stopped (pid {pgid}, {how[pgid]})")
    return lines


def _executable(name: str) -> str:
    """The console script next to the running interpreter (the project's venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise StackError(
            f"`{name}` not found next to {sys.executable} nor on PATH; run with the project's .venv/bin/python"
        )
    return found


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports that are free right now (bound together to port 0, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else "(log is empty)"


def _spawn(
    comp: Component, cfg: StackConfig, argv: list[str], env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    log_path = comp.log_file(cfg)
    with log_path.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n=== {stamp} evergreen stack: {' '.join(_mask(a) for a in argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: `down` signals the whole group
        )
    comp.pid_file(cfg).write_text(f"{proc.pid}\n")
    return proc


# --- environments and commands -----------------------------------------------------------------------


def _base_env(cfg: StackConfig) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_API_KEY"):
        env.pop(var, None)
    env["PREFECT_HOME"] = str(cfg.prefect_home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    for name, value in QUIET_DEFAULTS.items():  # the servers and the worker do not call out either
        env.setdefault(name, value)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(_marks(cfg))
    return env


def _marks(cfg: StackConfig) -> dict[str, str]:
    return {HOME_MARK: str(cfg.home), REPO_MARK: str(REPO_ROOT)}


def prefect_client_env(cfg: StackConfig) -> dict[str, str]:
    env = _base_env(cfg)
    env["PREFECT_API_URL"] = cfg.prefect_api_url
    return env


def _prefect_server_env(cfg: StackConfig) -> dict[str, str]:
    env = _base_env(cfg)
    # The UI is a page that asks the server (GET /ui-settings) where the API is. Prefect answers with
    # PREFECT_UI_API_URL, which defaults to port 4200 whatever `--port` says: without it the UI of a
    # server on another port shows "Can't connect to Server API". Set to the stack's own URLs unless
    # set already (e.g. the address a browser on another machine reaches through a proxy).
    if not (env.get("PREFECT_UI_API_URL") or env.get("PREFECT_SERVER_UI_API_URL")):
        env["PREFECT_UI_API_URL"] = cfg.prefect_api_url
    # The UI's own address, used in links Prefect prints and sends.
    env.setdefault("PREFECT_UI_URL", cfg.prefect_ui_url)
    return env


def _prefect_server_cmd(cfg: StackConfig) -> list[str]:
    return [_executable("prefect"), "server", "start", "--host", cfg.host, "--port", str(cfg.prefect_port)]


def _worker_cmd() -> list[str]:
    return [_executable("prefect"), "worker", "start", "--pool", POOL_NAME, "--type", POOL_TYPE, "--name", WORKER_NAME]


def _worker_env(cfg: StackConfig) -> dict[str, str]:
    env = prefect_client_env(cfg)
    env["PREFECT_WORKER_QUERY_SECONDS"] = f"{cfg.worker_poll:g}"
    # Flow runs started by the worker use this stack: its home and its MLflow server.
    env["EVERGREEN_HOME"] = str(cfg.home)
    env["EVERGREEN_TRACKING_URI"] = cfg.mlflow_url
    # Flow runs beat this often; the crash automation waits for several missed beats.
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(FLOW_HEARTBEAT_SECONDS))
    return env


def mlflow_stores(cfg: StackConfig) -> dict[str, tuple[str, str]]:
    """`mlflow server` store flags -> (value, where it comes from); a flag left out is not passed.

    MLflow's own environment variables win over the local defaults, so a production setup swaps the
    stores by configuration (e.g. MLFLOW_BACKEND_STORE_URI=postgresql://...) without touching this file.
    """
    local_artifacts = (cfg.home / "mlartifacts").as_uri()

    def pick(var: str, default: str) -> tuple[str, str]:
        value = os.environ.get(var, "").strip()
        return (value, f"${var}") if value else (default, LOCAL_DEFAULT)

    out = {
        "--backend-store-uri": pick("MLFLOW_BACKEND_STORE_URI", f"sqlite:///{cfg.home / 'mlflow.db'}"),
        "--default-artifact-root": pick("MLFLOW_DEFAULT_ARTIFACT_ROOT", local_artifacts),
        # proxied artifact requests (mlflow-artifacts:/ URIs) land in the same folder, not ./mlartifacts
        "--artifacts-destination": pick("MLFLOW_ARTIFACTS_DESTINATION", local_artifacts),
    }
    if out["--artifacts-destination"][1] != LOCAL_DEFAULT and out["--default-artifact-root"][1] == LOCAL_DEFAULT:
        # Only a destination configured: new experiments default to mlflow-artifacts:/ (through the server).
        del out["--default-artifact-root"]
    return out


def prefect_database(cfg: StackConfig) -> str:
    """The Prefect server's database: its connection-URL setting if set, else SQLite in PREFECT_HOME."""
    for var in ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        value = os.environ.get(var, "").strip()
        if value:
            return f"{_mask(value)} (${var})"
    return f"sqlite {cfg.prefect_home / 'prefect.db'}"


def _mask(url: str) -> str:
    """Hide the password of a connection URL (scheme://user:password@host/...)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _mlflow_cmd(cfg: StackConfig) -> list[str]:
    argv = [_executable("mlflow"), "server"]
    for flag, (value, source) in mlflow_stores(cfg).items():
        if source == LOCAL_DEFAULT:  # a value from MLflow's environment variable reaches it directly
            argv += [flag, value]
    return argv + ["--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "1"]


def _mlflow_env(cfg: StackConfig) -> dict[str, str]:
    env = dict(os.environ)
    # Otherwise the server starts a job runner (huey consumers): ~10 processes and ~2.4 GB.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(_marks(cfg))
    return env


# --- health ------------------------------------------------------------------------------------------


def _http_ok(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return r.status_code == 200, f"HTTP {r.status_code}"


def prefect_healthy(cfg: StackConfig) -> tuple[bool, str]:
    return _http_ok(f"{cfg.prefect_api_url}/health")


def mlflow_healthy(cfg: StackConfig) -> tuple[bool, str]:
    return _http_ok(f"{cfg.mlflow_url}/health")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pool_workers(cfg: StackConfig) -> list[dict[str, Any]]:
    r = httpx.post(f"{cfg.prefect_api_url}/work_pools/{POOL_NAME}/workers/filter", json={}, timeout=5.0)
    r.raise_for_status()
    workers: list[dict[str, Any]] = r.json()
    return workers


def worker_healthy(cfg: StackConfig, since: datetime | None = None) -> tuple[bool, str]:
    """Our worker is listed ONLINE in the pool (with a heartbeat after `since`, if given)."""
    try:
        workers = pool_workers(cfg)
    except httpx.HTTPStatusError as exc:
        return False, f"work pool query: HTTP {exc.response.status_code}"
    except httpx.HTTPError as exc:
        return False, f"Prefect API unreachable ({type(exc).__name__})"
    for w in workers:
        if w.get("name") != WORKER_NAME:
            continue
        beat = w.get("last_heartbeat_time")
        if since is not None and (beat is None or _parse_time(beat) < since):
            return False, "no heartbeat yet"
        status = str(w.get("status", "?"))
        return status == "ONLINE", f"{status} in pool {POOL_NAME}"
    return False, f"not registered in pool {POOL_NAME}"


def _wait_until(
    what: str,
    check: Callable[[], tuple[bool, str]],
    proc: subprocess.Popen[bytes] | None,
    log: Path,
    timeout: float,
) -> float:
    """Poll `check` until it passes; fail early if the process exits. Returns the seconds waited."""
    start = time.monotonic()
    detail = ""
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what}: the process exited with code {proc.returncode} before it became healthy", log)
        ok, detail = check()
        if ok:
            return time.monotonic() - start
        time.sleep(0.5)
    raise StackError(f"{what}: not healthy after {timeout:.0f} s (last check: {detail})", log)


# --- work pool ---------------------------------------------------------------------------------------


def ensure_work_pool(cfg: StackConfig) -> str:
    """Create the process work pool unless it exists; returns what was done."""
    url = f"{cfg.prefect_api_url}/work_pools/{POOL_NAME}"
    r = httpx.get(url, timeout=10.0)
    if r.status_code == 200:
        pool_type = r.json().get("type")
        if pool_type != POOL_TYPE:
            raise StackError(
                f"work pool {POOL_NAME!r} exists with type {pool_type!r}, not {POOL_TYPE!r}; "
                f"delete it (`prefect work-pool delete {POOL_NAME}`) and run `up` again"
            )
        return f"work pool {POOL_NAME!r} exists"
    if r.status_code != 404:
        raise StackError(f"GET {url}: HTTP {r.status_code}: {r.text[:300]}", COMPONENTS[PREFECT_SERVER].log_file(cfg))
    argv = [_executable("prefect"), "work-pool", "create", POOL_NAME, "--type", POOL_TYPE]
    res = subprocess.run(
        argv,
        env=prefect_client_env(cfg),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        out = (res.stdout + res.stderr).strip()
        # Lost a race with another `up` (or the worker): it exists now, which is all we need.
        if httpx.get(url, timeout=10.0).status_code == 200:
            return f"work pool {POOL_NAME!r} exists"
        raise StackError(f"`{' '.join(argv[1:])}` failed with code {res.returncode}:\n{out}")
    return f"work pool {POOL_NAME!r} created"


# --- crashed flow runs -------------------------------------------------------------------------------

# A flow run whose process dies is marked Crashed by the worker that started it. When the worker or
# the machine goes too, Prefect's documented answer is an automation on the flow runs' heartbeats
# (https://docs.prefect.io/v3/advanced/detect-zombie-flows): a run that stops beating is crashed.
CRASH_AUTOMATION = "evergreen-crash-silent-flow-runs"
FLOW_HEARTBEAT_SECONDS = 60  # for runs the worker starts (Prefect's default is 180, its minimum 30)
CRASH_AFTER_SECONDS = 300  # five missed beats: a busy machine is not a dead one


def crash_automation(within_seconds: float = CRASH_AFTER_SECONDS) -> dict[str, Any]:
    """The automation as the REST API takes it: no heartbeat, nor a final state, for ``within_seconds``
    after a flow run's heartbeat, and that run becomes Crashed."""
    return {
        "name": CRASH_AUTOMATION,
        "description": f"A flow run silent for {within_seconds:g} s (no heartbeat, no final state) is marked Crashed.",
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "after": ["prefect.flow-run.heartbeat"],
            "expect": [
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            ],
            "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": within_seconds,
        },
        "actions": [
            {
                "type": "change-flow-run-state",
                "state": "CRASHED",
                "message": f"No heartbeat for {within_seconds:g} s: the run's process or machine is gone.",
            }
        ],
    }


def ensure_crash_automation(cfg: StackConfig, within_seconds: float = CRASH_AFTER_SECONDS) -> str:
    """Create the crash automation, or bring an existing one to this definition; returns what was done."""
    api = cfg.prefect_api_url
    body = crash_automation(within_seconds)
    found = httpx.post(
        f"{api}/automations/filter", json={"automations": {"name": {"any_": [CRASH_AUTOMATION]}}}, timeout=10.0
    )
    found.raise_for_status()
    if found.json():
        httpx.put(f"{api}/automations/{found.json()[0]['id']}", json=body, timeout=10.0).raise_for_status()
        return f"automation {CRASH_AUTOMATION!r} exists (silent runs crash after {within_seconds:g} s)"
    httpx.post(f"{api}/automations/", json=body, timeout=10.0).raise_for_status()
    return f"automation {CRASH_AUTOMATION!r} created (silent runs crash after {within_seconds:g} s)"


# --- commands ----------------------------------------------------------------------------------------


def _fmt_lines(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _home_flag(cfg: StackConfig) -> str:
    return "" if cfg.home == default_home() else f" --home {cfg.home}"


def summary(cfg: StackConfig) -> str:
    rows: list[tuple[str, ...]] = [("component", "pid", "log")]
    for name in START_ORDER:
        comp = COMPONENTS[name]
        pid = running_pid(comp, cfg)
        rows.append((name, str(pid) if pid else "-", str(comp.log_file(cfg))))
    stores = mlflow_stores(cfg)
    if "--default-artifact-root" in stores:
        artifacts = stores["--default-artifact-root"][0]
    else:
        artifacts = f"mlflow-artifacts:/ (served from {stores['--artifacts-destination'][0]})"
    exports = [
        f"export PREFECT_API_URL={cfg.prefect_api_url}",
        f"export EVERGREEN_TRACKING_URI={cfg.mlflow_url}",
    ]
    if cfg.home != default_home():
        exports.append(f"export EVERGREEN_HOME={cfg.home}")
    return "\n".join(
        [
            f"  Prefect UI    {cfg.prefect_ui_url}",
            f"  Prefect API   {cfg.prefect_api_url}",
            f"  MLflow UI     {cfg.mlflow_url}",
            f"  Prefect DB    {prefect_database(cfg)}",
            f"  MLflow store  {_mask(stores['--backend-store-uri'][0])}, artifacts {artifacts}",
            f"  work pool     {POOL_NAME} (type {POOL_TYPE}; worker {WORKER_NAME!r} polls every {cfg.worker_poll:g} s)",
            f"  state         {cfg.state_dir}",
            "",
            _fmt_lines(rows),
            "",
            "Point a shell at the stack:",
            *(f"  {line}" for line in exports),
            "",
            f"Stop it: python -m deployments.stack down{_home_flag(cfg)}",
        ]
    )


def _resolve_config(args: argparse.Namespace, home: Path) -> tuple[StackConfig, StackConfig | None]:
    """(settings to use, settings recorded by the last `up` in this home).

    An option given on the command line wins, then the recorded settings (so `down`, `status` and a
    second `up` find the stack where it was started), then the defaults.
    """
    recorded = StackConfig.load(home)
    base = recorded or StackConfig(home=home)
    cfg = StackConfig(
        home=home,
        host=args.host if args.host is not None else base.host,
        prefect_port=args.prefect_port if args.prefect_port is not None else base.prefect_port,
        mlflow_port=args.mlflow_port if args.mlflow_port is not None else base.mlflow_port,
        worker_poll=args.worker_poll if args.worker_poll is not None else base.worker_poll,
    )
    return cfg, recorded


def locate_home(command: str) -> Path | None:
    """The home `status` or `down` acts on when no --home is given.

    The default home if its stack runs (or none runs anywhere); else the one stack of this checkout
    running in another home (started with --home or another EVERGREEN_HOME), said on stderr. None
    when several run elsewhere: which one is the user's to say, and the commands are printed.
    """
    home = default_home()
    if _any_running(StackConfig(home=home)):
        return home
    others = [h for h in running_homes() if h != home]
    if len(others) == 1:
        print(f"no stack runs in {home}; using the one running in {others[0]} (--home {others[0]})", file=sys.stderr)
        return others[0]
    if others:
        print(f"no stack runs in {home}, but {len(others)} run in other homes; name one:", file=sys.stderr)
        for other in others:
            print(f"  python -m deployments.stack {command} --home {other}", file=sys.stderr)
        return None
    return home


def cmd_up(cfg: StackConfig, timeout: float, recorded: StackConfig | None = None) -> int:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    running = {name: pid for name in START_ORDER if (pid := running_pid(COMPONENTS[name], cfg)) is not None}
    if running and recorded is not None and recorded != cfg:
        # Part of the stack runs with the recorded settings: never start the rest elsewhere.
        print(
            f"note: a stack is already running in {cfg.state_dir} with host {recorded.host}, Prefect port "
            f"{recorded.prefect_port}, MLflow port {recorded.mlflow_port}, worker poll {recorded.worker_poll:g} s; "
            "keeping those (run `down` first to change them)"
        )
        cfg = recorded
    if len(running) == len(START_ORDER):
        print(f"Evergreen stack already running (state: {cfg.state_dir}); nothing started.\n")
        print(summary(cfg))
        return 0

    for name, pid in running.items():
        print(f"{name}: already running (pid {pid})")
    # A component whose leader died may have left children (uvicorn) holding its port: clear them first.
    leftovers = [COMPONENTS[n] for n in START_ORDER if n not in running and read_pid(COMPONENTS[n], cfg) is not None]
    for line in stop_components(leftovers, cfg):
        if "stopped" in line:
            print(f"leftover {line}")
    cfg.prefect_home.mkdir(parents=True, exist_ok=True)
    (cfg.home / "mlartifacts").mkdir(parents=True, exist_ok=True)
    cfg.save()

    t0 = time.monotonic()
    started: list[Component] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, port in ((PREFECT_SERVER, cfg.prefect_port), (MLFLOW_SERVER, cfg.mlflow_port)):
            if name in running:
                continue
            if not port_free(cfg.host, port):
                raise StackError(
                    f"{name}: port {port} on {cfg.host} is already in use by another program "
                    f"(not this stack); stop it or pass --{name.split('-')[0]}-port"
                )
        # Both servers start at once: they take ~10-20 s each, mostly imports.
        if PREFECT_SERVER not in running:
            print(f"{PREFECT_SERVER}: starting on {cfg.prefect_ui_url}")
            procs[PREFECT_SERVER] = _spawn(
                COMPONENTS[PREFECT_SERVER], cfg, _prefect_server_cmd(cfg), _prefect_server_env(cfg), cfg.state_dir
            )
            started.append(COMPONENTS[PREFECT_SERVER])
        if MLFLOW_SERVER not in running:
            print(f"{MLFLOW_SERVER}: starting on {cfg.mlflow_url}")
            procs[MLFLOW_SERVER] = _spawn(
                COMPONENTS[MLFLOW_SERVER], cfg, _mlflow_cmd(cfg), _mlflow_env(cfg), cfg.state_dir
            )
            started.append(COMPONENTS[MLFLOW_SERVER])

        waited = _wait_until(
            f"{PREFECT_SERVER} ({cfg.prefect_api_url}/health)",
            lambda: prefect_healthy(cfg),
            procs.get(PREFECT_SERVER),
            COMPONENTS[PREFECT_SERVER].log_file(cfg),
            timeout,
        )
        print(f"{PREFECT_SERVER}: healthy after {waited:.1f} s")
        print(ensure_work_pool(cfg))
        print(ensure_crash_automation(cfg))

        if PREFECT_WORKER not in running:
            since = datetime.now(UTC) - timedelta(seconds=5)
            print(f"{PREFECT_WORKER}: starting (pool {POOL_NAME}, cwd {REPO_ROOT})")
            procs[PREFECT_WORKER] = _spawn(COMPONENTS[PREFECT_WORKER], cfg, _worker_cmd(), _worker_env(cfg), REPO_ROOT)
            started.append(COMPONENTS[PREFECT_WORKER])
            waited = _wait_until(
                f"{PREFECT_WORKER} (pool {POOL_NAME})",
                lambda: worker_healthy(cfg, since),
                procs[PREFECT_WORKER],
                COMPONENTS[PREFECT_WORKER].log_file(cfg),
                timeout,
            )
            print(f"{PREFECT_WORKER}: online after {waited:.1f} s")

        waited = _wait_until(
            f"{MLFLOW_SERVER} ({cfg.mlflow_url}/health)",
            lambda: mlflow_healthy(cfg),
            procs.get(MLFLOW_SERVER),
            COMPONENTS[MLFLOW_SERVER].log_file(cfg),
            timeout,
        )
        print(f"{MLFLOW_SERVER}: healthy")
    except (StackError, httpx.HTTPError, subprocess.TimeoutExpired, OSError, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt):
            print("\ninterrupted", file=sys.stderr)
        else:
            print(f"\nerror: {exc}", file=sys.stderr)
        log = exc.log if isinstance(exc, StackError) else None
        if log is not None:
            print(f"  log: {log}\n  last lines:\n{log_tail(log)}", file=sys.stderr)
        if started:
            print("stopping what this `up` started:", file=sys.stderr)
            for line in stop_components(list(reversed(started)), cfg):
                print(f"  {line}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1

    print(f"\nEvergreen stack is up ({time.monotonic() - t0:.1f} s)\n")
    print(summary(cfg))
    return 0


def cmd_down(cfg: StackConfig) -> int:
    if not cfg.state_dir.is_dir():
        print(f"nothing to stop: no stack state in {cfg.state_dir}")
        return 0
    t0 = time.monotonic()
    # The worker first (it may be launching flow runs against the servers), then both servers together.
    lines = stop_components([COMPONENTS[PREFECT_WORKER]], cfg)
    lines += stop_components([COMPONENTS[PREFECT_SERVER], COMPONENTS[MLFLOW_SERVER]], cfg)
    for line in lines:
        print(line)
    failed = [line for line in lines if "FAILED" in line]
    print(
        f"{'stack NOT fully stopped' if failed else 'stack stopped'} ({time.monotonic() - t0:.1f} s; logs kept in {cfg.state_dir})"
    )
    return 1 if failed else 0


State = Literal["running", "stopped", "orphaned"]


class ComponentStatus(TypedDict):
    """One component in `status` (and in `status --json`)."""

    component: str
    state: State
    pid: int | None
    healthy: bool
    health: str
    url: str
    log: str


def component_status(cfg: StackConfig) -> list[ComponentStatus]:
    """Per component: state (running / stopped / orphaned), pid, health check result, URL, log."""
    out: list[ComponentStatus] = []
    prefect_up = False
    for name in START_ORDER:
        comp = COMPONENTS[name]
        pid = running_pid(comp, cfg)
        recorded_pid = read_pid(comp, cfg)
        state: State
        if pid is not None:
            state = "running"
        elif recorded_pid is not None and group_alive(recorded_pid):
            state = "orphaned"  # the leader died, its children still run: `down` clears them
        else:
            state = "stopped"
        if name == PREFECT_SERVER:
            healthy, detail = prefect_healthy(cfg)
            prefect_up = healthy
        elif name == MLFLOW_SERVER:
            healthy, detail = mlflow_healthy(cfg)
        elif prefect_up:
            healthy, detail = worker_healthy(cfg)
        else:
            healthy, detail = False, "unknown (Prefect server not healthy)"
        if state == "stopped":
            # Something answering where a stopped component should be is not ours: say so.
            detail = f"-, but {detail} from another process on its port" if healthy and name != PREFECT_WORKER else "-"
        out.append(
            {
                "component": name,
                "state": state,
                "pid": pid if pid is not None else (recorded_pid if state == "orphaned" else None),
                "healthy": state == "running" and healthy,
                "health": detail,
                "url": comp.url(cfg),
                "log": str(comp.log_file(cfg)),
            }
        )
    return out


def cmd_status(cfg: StackConfig, as_json: bool) -> int:
    rows = component_status(cfg)
    all_ok = all(r["state"] == "running" and r["healthy"] for r in rows)
    if as_json:
        body = {
            "running": all_ok,
            "home": str(cfg.home),
            "prefect_ui_url": cfg.prefect_ui_url,
            "prefect_api_url": cfg.prefect_api_url,
            "mlflow_url": cfg.mlflow_url,
            "components": rows,
        }
        print(json.dumps(body, indent=2))
        return 0 if all_ok else 3
    table: list[tuple[str, ...]] = [("component", "state", "pid", "health", "url")]
    for r in rows:
        health = ("ok: " if r["healthy"] else "failing: ") + r["health"] if r["state"] == "running" else r["health"]
        table.append((r["component"], r["state"], str(r["pid"] or "-"), health, r["url"]))
    print(f"Evergreen stack in {cfg.state_dir}\n")
    print(_fmt_lines(table))
    for r in rows:
        if r["state"] == "running" and not r["healthy"]:
            print(f"\n{r['component']} is running but not healthy; see {r['log']}")
        elif r["state"] == "orphaned":
            print(
                f"\n{r['component']}: its main process died but children still run (process group {r['pid']}); run `down`, see {r['log']}"
            )
    return 0 if all_ok else 3


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        help="Evergreen home; stack logs and pid files go to HOME/stack (default: $EVERGREEN_HOME or <repo>/.evergreen)",
    )
    recorded = ", or what the last `up` in HOME recorded"
    common.add_argument("--host", help=f"interface both servers bind to (default {DEFAULT_HOST}{recorded})")
    common.add_argument(
        "--prefect-port", type=int, help=f"Prefect server port (default {DEFAULT_PREFECT_PORT}{recorded})"
    )
    common.add_argument("--mlflow-port", type=int, help=f"MLflow server port (default {DEFAULT_MLFLOW_PORT}{recorded})")
    common.add_argument(
        "--worker-poll",
        type=float,
        help=f"seconds between the worker's polls for flow runs, PREFECT_WORKER_QUERY_SECONDS (default {DEFAULT_WORKER_POLL:g}{recorded})",
    )

    parser = argparse.ArgumentParser(
        prog="python -m deployments.stack",
        description=(
            "Local Evergreen stack: a Prefect server, a process worker on the work pool "
            f"{POOL_NAME!r}, and an MLflow tracking server, each in the background with a log and a pid file "
            "under HOME/stack. Options not given default to what the last `up` in HOME recorded, else to the defaults."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status}")
    p_up = sub.add_parser("up", parents=[common], help="start whatever is not running and wait until healthy")
    p_up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for each component (default %(default)s)",
    )
    sub.add_parser("down", parents=[common], help="stop the worker, then the servers (idempotent)")
    p_status = sub.add_parser(
        "status", parents=[common], help="per component: running/stopped, pid, health, URL (exit 0 only if all healthy)"
    )
    p_status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.home:
            home: Path | None = Path(args.home).expanduser().absolute()
        elif args.command == "up":
            home = default_home()
        else:
            home = locate_home(args.command)
        if home is None:
            return 2
        cfg, recorded = _resolve_config(args, home)
        if args.command == "up":
            return cmd_up(cfg, args.timeout, recorded)
        if args.command == "down":
            return cmd_down(cfg)
        return cmd_status(cfg, args.json)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.log is not None:
            print(f"  log: {exc.log}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
