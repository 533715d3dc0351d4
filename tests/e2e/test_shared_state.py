"""Past one machine, for real: every piece of shared state behind a URL, two process workers whose
homes are empty, the whole loop through deployments.

Started here on 127.0.0.1 free ports: PostgreSQL (Debian's package: the Prefect server's database,
MLflow's backend, the Optuna study, Feast's SQL registry), Redis (Debian's package: Feast's online
store), an S3 API (moto's server, from PyPI: feature tables and MLflow's artifacts), a Prefect server,
an MLflow server, and two Prefect process workers on their own queues; at the end a serving gateway. Worker A builds the features
and checks drift; worker B trains and retrains: B only ever sees what A wrote through the shared
stores, and neither home holds any of them afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import optuna
import pandas as pd
import pytest

from evergreen import QUIET_DEFAULTS
from tests.conftest import ROOT, free_port, running_gateway, running_mlflow_server, wait_healthy, write_config
from tests.flows.conftest import SMALL
from tests.flows.test_parallel_tuning import BUDGET, assert_one_study_ran_exactly_its_budget
from tests.servers import PostgresServer, S3Server, postgresql_server, redis_server, s3_server, stop

from .conftest import TRIGGER_WAIT, api, run, runs_of, wait

__all__ = ["postgresql_server", "redis_server", "s3_server"]  # fixtures shared by the test run

pytestmark = pytest.mark.e2e

POOL = "evergreen-shared"
TRAIN_AS_OF = "2013-04-01"
DRIFT_AS_OF = "2013-12-20"  # eight months after the champion's training window: summer and winter delays
SHARED_STATE = ("feast", "mlflow.db", "optuna.db", "mlartifacts")  # what the embedded default keeps in a home


@dataclass(frozen=True)
class PrefectServer:
    prefect_api_url: str


@dataclass(frozen=True)
class SharedStack:
    prefect_api_url: str
    mlflow_url: str
    config: Path
    model: str
    bucket: str
    gateway_port: int
    s3: S3Server
    redis_url: str
    optuna_url: str
    registry_url: str
    homes: dict[str, Path]
    deployments: dict[str, str]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without its Prefect and Evergreen settings (the test session's own
    Prefect server among them), with Evergreen's quiet defaults and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "EVERGREEN_", "AWS_", "MLFLOW_"))}
    return {**env, **QUIET_DEFAULTS, **extra}


def start(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("w") as log:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


# Deployments of this stack's pool, from the checkout (a process pool runs the code where it is).
# Training's trigger answers this model's drift events only: retraining is Prefect's, not the test's.
DEPLOY = textwrap.dedent(
    """
    import sys
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.events import DeploymentEventTrigger
    from prefect.workers.process import ProcessWorker

    root, pool, config, model = sys.argv[1:5]
    with get_client(sync_client=True) as client:
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
        for queue in ("a", "b"):
            client.create_work_queue(name=queue, work_pool_name=pool)
    retrain = DeploymentEventTrigger(
        match={"prefect.resource.id": f"evergreen.model.{model}"},
        expect={"evergreen.drift.detected"},
        posture="Reactive",
        threshold=1,
        within=900,
        parameters={"config": "{{ event.payload.config }}", "as_of": "{{ event.payload.as_of }}", "reason": "drift"},
    )
    for entrypoint, queue, triggers in (
        ("flows/features.py:features", "a", []),
        ("flows/drift.py:drift", "a", []),
        ("flows/training.py:training", "b", [retrain]),
    ):
        flow.from_source(root, entrypoint).deploy(
            name="shared",
            work_pool_name=pool,
            work_queue_name=queue,
            parameters={"config": config},
            triggers=triggers,
            print_next_steps=False,
        )
    """
)


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, postgresql_server: PostgresServer, redis_server: str, s3_server: S3Server
) -> Iterator[SharedStack]:
    tmp = tmp_path_factory.mktemp("shared-stack")
    pg = postgresql_server
    bucket = s3_server.create_bucket()
    prefect_db = pg.create_database().replace("+psycopg", "+asyncpg")
    mlflow_db, optuna_url, registry_url = pg.create_database(), pg.create_database(), pg.create_database()
    model = f"shared-{uuid.uuid4().hex[:8]}"
    prefect_port, mlflow_port, gateway_port = free_port(), free_port(), free_port()
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"

    with ExitStack() as servers:
        prefect_env = clean_env(
            PREFECT_HOME=str(tmp / "prefect-server"),
            PREFECT_API_DATABASE_CONNECTION_URL=prefect_db,
            PREFECT_UI_ENABLED="false",
        )
        server = start(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(prefect_port)],
            prefect_env,
            tmp / "prefect-server.log",
        )
        servers.callback(stop, server)
        mlflow_url, _ = servers.enter_context(
            running_mlflow_server(
                tmp / "mlflow", mlflow_port, backend=mlflow_db, artifacts=f"s3://{bucket}/mlflow", env=s3_server.env
            )
        )
        wait_healthy(f"{prefect_api}/health", server, tmp / "prefect-server.log", "prefect server on PostgreSQL")

        # The one config every run reads: each piece of shared state is a URL; the home is the worker's.
        tuning = {**SMALL["tuning"], "n_trials": BUDGET, "workers": 2, "threads": 1, "storage": optuna_url}
        registry = {**SMALL["registry"], "model_name": model, "tracking_uri": mlflow_url}
        features = {"files_url": f"s3://{bucket}/feast", "registry_url": registry_url, "online_url": redis_server}
        serving = {"port": gateway_port, "reload_seconds": 1}
        config = write_config(
            tmp / "config.yaml",
            Path("${EVERGREEN_HOME}"),
            "flights",
            **{**SMALL, "tuning": tuning, "registry": registry, "features": features, "serving": serving},
        )
        client_env = clean_env(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp / "prefect-client"))
        deploy = subprocess.run(
            [sys.executable, "-c", DEPLOY, str(ROOT), POOL, str(config), model],
            cwd=ROOT,
            env=client_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

        homes = {}
        for queue in ("a", "b"):
            homes[queue] = tmp / f"worker-{queue}" / "home"
            homes[queue].mkdir(parents=True)
            worker_env = clean_env(
                **s3_server.env,
                PREFECT_API_URL=prefect_api,
                PREFECT_HOME=str(tmp / f"worker-{queue}" / "prefect"),
                PREFECT_WORKER_QUERY_SECONDS="2",
                EVERGREEN_HOME=str(homes[queue]),
                HOME=str(tmp / f"worker-{queue}"),
            )
            worker = start(
                [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", POOL]
                + ["--work-queue", queue, "--name", f"worker-{queue}"],
                worker_env,
                tmp / f"worker-{queue}.log",
            )
            # A Prefect worker leaves on a second signal only; with no run left, its group can go at once.
            servers.callback(stop, worker, signal.SIGKILL)

        server_api = PrefectServer(prefect_api)
        flows = {f["id"]: f["name"] for f in api(server_api, "POST", "/flows/filter", json={})}
        deployments = {flows[d["flow_id"]]: d["id"] for d in api(server_api, "POST", "/deployments/filter", json={})}
        yield SharedStack(
            prefect_api,
            mlflow_url,
            config,
            model,
            bucket,
            gateway_port,
            s3_server,
            redis_server,
            optuna_url,
            registry_url,
            homes,
            deployments,
        )


def test_the_whole_loop_runs_on_two_workers_with_empty_homes_against_shared_stores(
    shared: SharedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis
    from mlflow import MlflowClient

    from evergreen import feature_store
    from evergreen.config import load_config

    # 1. Features on worker A: tables in the bucket, registry in PostgreSQL, online values in Redis.
    built = run(shared, shared.deployments["features"], {})
    assert built["state"]["type"] == "COMPLETED", built["state"]
    keys = shared.s3.keys(shared.bucket, "feast/")
    assert "feast/flights.published" in keys
    assert any(k.endswith("/features/aircraft_history.parquet") for k in keys)

    # 2. Training on worker B, two tuners on one PostgreSQL study: exact budget, distinct parameters.
    trained = run(shared, shared.deployments["training"], {"as_of": TRAIN_AS_OF, "reason": "manual"}, timeout=600)
    assert trained["state"]["type"] == "COMPLETED", trained["state"]
    (first_study,) = optuna.get_all_study_summaries(shared.optuna_url)
    assert_one_study_ran_exactly_its_budget(shared.optuna_url, {"tuning_trials": BUDGET}, first_study.study_name)

    # 3. Drift on worker A against the champion B registered: the event makes Prefect retrain on B.
    since = datetime.now(UTC)
    checked = run(shared, shared.deployments["drift"], {"as_of": DRIFT_AS_OF})
    assert checked["state"]["type"] == "COMPLETED", checked["state"]
    deadline = time.monotonic() + TRIGGER_WAIT  # the trigger's latency is the server's; only its run counts
    while time.monotonic() < deadline and not (retrains := runs_of(shared, shared.deployments["training"], since)):
        time.sleep(2)
    assert len(retrains) == 1, f"drift should start exactly one retrain, got {len(retrains)}"
    retrained = wait(shared, retrains[0]["id"], 600)
    assert retrained["state"]["type"] == "COMPLETED", retrained["state"]
    assert retrained["parameters"]["reason"] == "drift"
    assert retrained["parameters"]["as_of"].startswith(DRIFT_AS_OF)
    studies = {s.study_name for s in optuna.get_all_study_summaries(shared.optuna_url)}
    (second,) = studies - {first_study.study_name}
    assert_one_study_ran_exactly_its_budget(shared.optuna_url, {"tuning_trials": BUDGET}, second)

    # 4. The registry is whole: both versions, a champion, each version's artifacts in the bucket.
    client = MlflowClient(tracking_uri=shared.mlflow_url, registry_uri=shared.mlflow_url)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{shared.model}'"))
    assert versions == [1, 2]
    champion = client.get_model_version_by_alias(shared.model, "champion")
    assert champion.version in {"1", "2"}
    artifacts = shared.s3.keys(shared.bucket, "mlflow/")
    assert sum(k.endswith("/MLmodel") for k in artifacts) == 2
    run_ids = {client.get_model_version(shared.model, str(v)).run_id for v in versions}
    assert all(any(f"/{r}/artifacts/gate/decision.json" in k for k in artifacts) for r in run_ids)

    # 5. Online features come from Redis: a reader with nothing local but the URLs gets A's values.
    for name, value in shared.s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EVERGREEN_HOME", str(shared.homes["a"].parent / "reader"))
    cfg = feature_store.pinned(load_config(shared.config))
    table = pd.read_parquet(f"{cfg.features_dir}/aircraft_history.parquet")
    latest = table.sort_values("event_timestamp").groupby("tailnum").tail(1).set_index("tailnum")
    tails = list(latest.index[:5])
    store = feature_store.get_store(cfg)
    online = store.get_online_features(
        features=["aircraft_history:arrivals_7d"], entity_rows=[{"tailnum": t} for t in tails]
    ).to_df()
    np.testing.assert_array_equal(online["arrivals_7d"].to_numpy(), latest.loc[tails, "arrivals_7d"].to_numpy())
    client_redis = redis.Redis.from_url(shared.redis_url)
    assert client_redis.dbsize() > len(latest)  # one hash per entity key, of every view
    client_redis.close()
    assert [p.name for p in store.registry.list_projects(allow_cache=False)] == [cfg.feast_project]

    # 6. A gateway with an empty home serves the champion with those Redis values.
    from evergreen.features import latest_outcome
    from tasks.data import load_raw_data, prepare

    prepared = prepare.fn(cfg, load_raw_data.fn(cfg))
    at = latest_outcome(prepared, cfg.problem)
    asked = prepared[prepared["tailnum"].isin(latest.index)].tail(20)
    cast = {"string": str, "number": float, "integer": int}
    rows = [
        {name: cast[f.type](r[name]) for name, f in cfg.problem.request.items()} | {"prediction_time": at.isoformat()}
        for _, r in asked.iterrows()
    ]
    gateway_env = {**shared.s3.env, "EVERGREEN_HOME": str(shared.homes["a"].parent / "gateway")}
    log = shared.homes["a"].parent / "gateway.log"
    with running_gateway(shared.config, shared.gateway_port, log, env=gateway_env) as url:
        r = httpx.post(f"{url}/predict", json={"rows": rows, "return_features": True}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {p["version"] for p in body["predictions"]} == {champion.version}
    served = pd.DataFrame(body["features"])["arrivals_7d"]
    expected = latest.loc[asked["tailnum"], "arrivals_7d"].to_numpy()
    fresh = served.notna().to_numpy()  # a value older than its view's TTL at that time is withheld
    assert fresh.any()
    np.testing.assert_array_equal(served.to_numpy()[fresh].astype(float), expected[fresh].astype(float))

    # 7. Nothing shared was kept in a worker's home.
    for queue, home in shared.homes.items():
        kept = [name for name in SHARED_STATE if (home / name).exists()]
        assert not kept, f"worker {queue} keeps {kept} in its home"
