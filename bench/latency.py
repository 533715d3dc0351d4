"""Start-up latencies: cold import of each flow module, and drift event -> retraining run RUNNING.

(a) Cold import. Each flow module (``flows.training``, ``flows.drift``, ``flows.features``,
    ``flows.rollout``, ``flows.replay``, ``flows.main``) imported in a fresh interpreter
    (``python -c "import flows.X"``), minus a bare ``python -c pass``; median of ``--repeat``.
    Two bytecode situations, each with its own ``PYTHONPYCACHEPREFIX`` under the temp folder:
      cached   - the bytecode is compiled already (primed by one untimed import), as in the Docker
                 image (``UV_COMPILE_BYTECODE=1``) or any install that could write ``__pycache__``;
      compiled - no bytecode at all (``PYTHONDONTWRITEBYTECODE=1``, empty cache): every process
                 compiles every module it imports, which is what a venv without .pyc files run
                 under PYTHONDONTWRITEBYTECODE pays on each start (skip with ``--skip-compiled``).
    The target (<= 2 s) is judged on ``cached``. The slowest module's biggest imports are listed
    from ``python -X importtime``.
(b) Event -> RUNNING. The local stack as ``python -m deployments.stack up`` starts it (Prefect server,
    process worker polling every ``--worker-poll`` s, MLflow server; free 127.0.0.1 ports, a temp home
    and PREFECT_HOME, never the user's profile), then ``prefect deploy --name retrain-on-drift`` from
    the repo's prefect.yaml (its trigger, concurrency limit 1 / CANCEL_NEW). Per repetition: emit
    the drift flow's own event (``emit_event("evergreen.drift.detected", resource
    evergreen.model.<model>, payload with as_of, config ...)``) and time until the triggered run's RUNNING
    state (its state history: the instant the engine in the flow-run process entered RUNNING, so
    the worker's process start and the flow module's import are included). Split into trigger
    (emit -> run created), worker pickup (-> PENDING) and process start (-> RUNNING). The run is
    then cancelled and awaited to a final state, so the concurrency limit never cancels the next
    one; the reactive trigger ignores events for ``within: 900`` s after it fired, so before each
    repetition the deployment's automation is re-created as ``prefect deploy`` does (delete and
    create the same definition). Runs read a small config in the temp home (the flights example's,
    with the temp home and a tiny tuning budget; named by the event as the drift flow names its own;
    no features built: a run not cancelled in time fails on its own within seconds). The stack is always stopped
    (``stack down``, then SIGKILL of any group left), also on error or Ctrl-C.
    The flow-run processes get the ``cached`` bytecode of (a).

    uv run --frozen python bench/latency.py --repeat 5 --events 5
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Prefect is imported here as a client of the running stack (hence the TID251 exemptions below).
MODULES = ("flows.training", "flows.drift", "flows.features", "flows.rollout", "flows.replay", "flows.main")
IMPORT_TARGET_S = 2.0
EVENT_TARGET_S = 15.0
DEPLOYMENT = "training/retrain-on-drift"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# ── (a) cold imports ──────────────────────────────────────────────────────────────────────────────
def import_env(base: Path, pycache: Path, write: bool) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(base / "prefect-imports"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPYCACHEPREFIX": str(pycache),
    }
    # The example config reads these: the runs get the temp home's stores and the packaged data.
    evergreen = ("EVERGREEN_HOME", "EVERGREEN_CONFIG", "EVERGREEN_DATA", "EVERGREEN_TRACKING_URI", "EVERGREEN_ROLLOUT")
    for var in ("PREFECT_API_URL", "PREFECT_PROFILE", *evergreen):
        env.pop(var, None)
    if write:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def timed_python(code: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"python -c {code!r} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return wall


def cold_imports(base: Path, modules: list[str], repeat: int, compiled: bool) -> dict[str, dict[str, float]]:
    """module -> {situation: median seconds above a bare interpreter}; key '' holds the bare start."""
    situations = {"cached": import_env(base, base / "pycache", write=True)}
    if compiled:
        situations["compiled"] = import_env(base, base / "pycache-empty", write=False)
    for m in modules:  # prime the cache (and the OS page cache) once, untimed
        timed_python(f"import {m}", situations["cached"])
    out: dict[str, dict[str, float]] = {m: {} for m in ["", *modules]}
    for name, env in situations.items():
        bare = statistics.median(timed_python("pass", env) for _ in range(repeat))
        out[""][name] = bare
        for m in modules:
            out[m][name] = statistics.median(timed_python(f"import {m}", env) for _ in range(repeat)) - bare
            print(f"  {name:<9}{m:<16}{out[m][name]:7.2f} s")
    return out


def top_imports(module: str, env: dict[str, str], n: int = 6) -> list[tuple[str, float]]:
    """The packages that cost ``module`` most: per top-level package, the cumulative time of its first
    (outermost) import in ``python -X importtime``. Nested packages count in their importer too."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    best: dict[str, float] = {}
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| *(\S+)", line)
        if m:
            pkg = m.group(2).split(".")[0]
            if pkg not in ("flows", "tasks"):  # the project's wrappers: they contain everything
                best[pkg] = max(best.get(pkg, 0.0), int(m.group(1)) / 1e6)
    return sorted(best.items(), key=lambda kv: -kv[1])[:n]


# ── (b) event -> RUNNING ──────────────────────────────────────────────────────────────────────────
class LocalStack:
    """``deployments.stack`` through its CLI in a temp home; ``stop`` is safe to call at any point."""

    def __init__(self, home: Path, env: dict[str, str], worker_poll: float) -> None:
        self.home = home
        self.env = env
        from deployments.stack import free_ports

        self.prefect_port, self.mlflow_port = free_ports(2)
        self.worker_poll = worker_poll
        self.api_url = f"http://127.0.0.1:{self.prefect_port}/api"

    def cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "deployments.stack", *args, "--home", str(self.home)]
        return subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self, timeout: float) -> float:
        t0 = time.perf_counter()
        res = self.cli(
            "up",
            "--host",
            "127.0.0.1",
            "--prefect-port",
            str(self.prefect_port),
            "--mlflow-port",
            str(self.mlflow_port),
            "--worker-poll",
            f"{self.worker_poll:g}",
            "--timeout",
            f"{timeout:g}",
            timeout=4 * timeout,
        )
        if res.returncode != 0:
            raise RuntimeError(f"stack up failed (exit {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        return time.perf_counter() - t0

    def stop(self) -> list[str]:
        lines = []
        if (self.home / "stack").is_dir():
            try:
                res = self.cli("down", timeout=120)
                lines += [ln for ln in res.stdout.splitlines() if ln.strip()]
            except subprocess.TimeoutExpired:
                lines.append("stack down timed out")
        from deployments.stack import COMPONENTS, StackConfig, group_alive, read_pid

        cfg = StackConfig(self.home, "127.0.0.1", self.prefect_port, self.mlflow_port, self.worker_poll)
        for name, comp in COMPONENTS.items():  # last resort: any process group `down` left
            pid = read_pid(comp, cfg)
            if pid is not None and group_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                    lines.append(f"killed leftover process group {pid} ({name})")
                except ProcessLookupError:
                    pass
        return lines


def deploy(stack: LocalStack, client_env: dict[str, str]) -> None:
    prefect = Path(sys.executable).parent / "prefect"
    res = subprocess.run(
        [str(prefect), "--no-prompt", "deploy", "--name", DEPLOYMENT.split("/")[1]],
        cwd=ROOT,
        env=client_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"prefect deploy failed (exit {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        )


async def rearm(client: Any, deployment_id: Any) -> None:
    """Re-create the deployment's automation as ``prefect deploy`` does: a fresh trigger window."""
    from uuid import uuid4

    from prefect.events.schemas.automations import AutomationCore

    resource = f"prefect.deployment.{deployment_id}"
    # The server does not return the owner: every automation related to this deployment is its trigger.
    owned = await client.read_resource_related_automations(resource)
    if not owned:
        raise RuntimeError(f"{DEPLOYMENT} has no automation: is the trigger still in prefect.yaml?")
    await client.delete_resource_owned_automations(resource)
    for a in owned:
        body = {k: getattr(a, k) for k in AutomationCore.model_fields}
        body["trigger"] = a.trigger.model_copy(update={"id": uuid4()})
        body["owner_resource"] = resource
        await client.create_automation(AutomationCore(**body))


def emit(model: str, as_of: str, config: str) -> datetime:
    """The drift flow's event (same name, resource and payload keys); returns the emit instant."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from tasks.drift import DRIFT_EVENT, model_resource_id

    at = datetime.now(UTC)
    emit_event(
        DRIFT_EVENT,
        resource={"prefect.resource.id": model_resource_id(model), "prefect.resource.name": model},
        payload={
            "as_of": as_of,
            "window_start": as_of,
            "window_end": as_of,
            "drifted_features": ["temp"],
            "severity": 1.0,
            "champion_version": "1",
            "reasons": ["latency benchmark"],
            "report": "",
            "config": config,
        },
    )
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)  # its "still processing" notes while draining
    EventsWorker.drain_all(timeout=30)  # sent, not only queued
    return at


async def event_to_running(model: str, config: str, repeat: int, timeout: float) -> list[dict[str, float]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Cancelling

    out = []
    async with get_client() as client:
        dep = await client.read_deployment_by_name(DEPLOYMENT)
        runs_of = DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
        seen = {r.id for r in await client.read_flow_runs(deployment_filter=runs_of)}
        for i in range(repeat):
            if i:
                await rearm(client, dep.id)
                await asyncio.sleep(2.0)  # the server loads the new automation after its commit
            at = await asyncio.to_thread(emit, model, "2013-12-20T00:00:00+00:00", config)
            deadline = time.monotonic() + timeout
            run = None
            while time.monotonic() < deadline:
                new = [r for r in await client.read_flow_runs(deployment_filter=runs_of) if r.id not in seen]
                run = new[0] if new else None
                if run is not None and (run.state_type.value == "RUNNING" or run.state_type.value in FINAL):
                    break
                await asyncio.sleep(0.25)
            if run is None:
                raise RuntimeError(f"no {DEPLOYMENT} run {timeout:.0f} s after the event (trigger not fired)")
            seen.add(run.id)
            states = await client.read_flow_run_states(run.id)
            stamp = {s.type.value: s.timestamp for s in sorted(states, key=lambda s: s.timestamp)}
            if "RUNNING" not in stamp:
                raise RuntimeError(
                    f"run {run.id} reached {run.state_type.value} without RUNNING "
                    f"({run.state.message if run.state else ''}); a concurrency slot still held?"
                )
            rec = {
                "running": (stamp["RUNNING"] - at).total_seconds(),
                "trigger": (run.created - at).total_seconds(),
                "pickup": (stamp["PENDING"] - run.created).total_seconds() if "PENDING" in stamp else float("nan"),
                "start": (stamp["RUNNING"] - stamp.get("PENDING", run.created)).total_seconds(),
            }
            out.append(rec)
            fr = await client.read_flow_run(run.id)
            if fr.state_type.value not in FINAL:
                await client.set_flow_run_state(run.id, Cancelling(message="latency benchmark"), force=True)
            while time.monotonic() < deadline + timeout:
                fr = await client.read_flow_run(run.id)
                if fr.state_type.value in FINAL:
                    break
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError(f"run {run.id} did not stop after cancellation (state {fr.state_type.value})")
            print(
                f"  event {i + 1}: RUNNING after {rec['running']:.2f} s (trigger {rec['trigger']:.2f} s, "
                f"worker pickup {rec['pickup']:.2f} s, process start {rec['start']:.2f} s); "
                f"run then {fr.state_type.value.lower()}"
            )
    return out


def measure_events(base: Path, repeat: int, worker_poll: float, timeout: float) -> list[dict[str, float]]:
    import yaml

    home = base / "stack-home"
    home.mkdir()
    config = home / "config.yaml"
    model = "evergreen-flight-delay"  # the trigger in prefect.yaml matches evergreen.model.<any model>
    config.write_text(
        yaml.safe_dump(
            {
                "extends": str(ROOT / "examples" / "flights" / "config.yaml"),
                "home": str(home),
                "tuning": {"n_trials": 1, "max_boost_rounds": 20},
                "registry": {"model_name": model},
            }
        )
    )
    env = import_env(base, base / "pycache", write=True)
    env["EVERGREEN_CONFIG"] = str(config)  # what the worker's flow runs read
    stack = LocalStack(home, env, worker_poll)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally` on kill too
    try:
        print(f"  stack up in {stack.start(timeout=180):.1f} s (Prefect API {stack.api_url})")
        client_env = {**env, "PREFECT_API_URL": stack.api_url, "PREFECT_HOME": str(base / "prefect-client")}
        t0 = time.perf_counter()
        deploy(stack, client_env)
        print(f"  prefect deploy --name retrain-on-drift in {time.perf_counter() - t0:.1f} s")
        os.environ.update({k: client_env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME")})
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        return asyncio.run(event_to_running(model, str(config), repeat, timeout))
    finally:
        for line in stack.stop():
            print(f"  {line}")
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="fresh interpreters per module and situation")
    p.add_argument("--events", type=int, default=5, help="drift events, one retraining run each")
    p.add_argument("--worker-poll", type=float, default=10.0, help="PREFECT_WORKER_QUERY_SECONDS (stack default 10)")
    p.add_argument("--event-timeout", type=float, default=180.0, help="seconds to wait for a run to start / stop")
    p.add_argument("--modules", nargs="+", default=list(MODULES))
    p.add_argument("--skip-compiled", action="store_true", help="skip the no-bytecode import timings")
    p.add_argument("--skip-imports", action="store_true")
    p.add_argument("--skip-events", action="store_true")
    args = p.parse_args()
    if "PREFECT_API_URL" in os.environ:
        print("note: PREFECT_API_URL is ignored; this benchmark starts its own server")
    base = Path(tempfile.mkdtemp(prefix="evergreen-bench-latency-"))
    try:
        print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
        imports: dict[str, dict[str, float]] = {}
        if not args.skip_imports:
            print(f"(a) cold imports, median of {args.repeat} fresh interpreters each")
            imports = cold_imports(base, args.modules, args.repeat, not args.skip_compiled)
        events: list[dict[str, float]] = []
        if not args.skip_events:
            if args.skip_imports:  # the flow-run processes still get a primed bytecode cache
                timed_python("import flows.training", import_env(base, base / "pycache", write=True))
            print(
                f"(b) drift event -> retraining run RUNNING, {args.events} events, worker poll {args.worker_poll:g} s"
            )
            events = measure_events(base, args.events, args.worker_poll, args.event_timeout)

        if imports:
            cols = [c for c in ("cached", "compiled") if c in imports[""]]
            print(f"\n{'cold import (s above bare python)':<36}" + "".join(f"{c:>10}" for c in cols))
            print(f"  {'bare python -c pass (absolute)':<34}" + "".join(f"{imports[''][c]:>10.2f}" for c in cols))
            for m in args.modules:
                print(f"  {m:<34}" + "".join(f"{imports[m][c]:>10.2f}" for c in cols))
            slowest = max(args.modules, key=lambda m: imports[m]["cached"])
            tops = top_imports(slowest, import_env(base, base / "pycache", write=True))
            print(
                f"biggest imports of {slowest} (cached, -X importtime): " + ", ".join(f"{k} {v:.2f} s" for k, v in tops)
            )
            if os.environ.get("PYTHONDONTWRITEBYTECODE"):
                print("note: PYTHONDONTWRITEBYTECODE is set here: processes started from this shell pay 'compiled'")
        if events:
            print(f"\n{'event -> RUNNING (s)':<22}{'median':>8}{'min':>8}{'max':>8}")
            for k, label in (("trigger", "trigger"), ("pickup", "worker pickup"), ("start", "process start")):
                v = [e[k] for e in events]
                print(f"  {label:<20}{statistics.median(v):>8.2f}{min(v):>8.2f}{max(v):>8.2f}")
            v = [e["running"] for e in events]
            print(f"  {'total':<20}{statistics.median(v):>8.2f}{min(v):>8.2f}{max(v):>8.2f}")
        parts = []
        if events:
            med = statistics.median(e["running"] for e in events)
            parts.append(f"event->running median = {med:.1f} s (target <= {EVENT_TARGET_S:g} s)")
        if imports:
            slowest = max(args.modules, key=lambda m: imports[m]["cached"])
            parts.append(
                f"slowest cold import = {imports[slowest]['cached']:.1f} s (target <= {IMPORT_TARGET_S:g} s), {slowest}"
            )
        if parts:
            print("; ".join(parts))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
