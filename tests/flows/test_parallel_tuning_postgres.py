"""Parallel tuners on one study in a real PostgreSQL (a server from the Debian package, started once
for the test run), run by a real Dask cluster: the study lives in the database the URL names, the
budget is exact, the tuners' parameters are distinct, and two tuners starting on a database without Optuna's schema do not race
to create it (``plan_tuning`` creates schema and study once, before any tuner starts)."""

from __future__ import annotations

import os
import threading

import optuna
import pytest

from evergreen.config import TuningConfig, load_config
from evergreen.training import TuningPlan, open_study, plan_tuning
from tests.conftest import free_port, write_config
from tests.flows.conftest import SMALL
from tests.flows.test_parallel_tuning import BUDGET, assert_one_study_ran_exactly_its_budget
from tests.servers import PostgresServer, postgresql_server, running_dask

__all__ = ["postgresql_server"]  # the fixture shared by the test run, used by name below

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine


def public_tables(server: PostgresServer, url: str) -> list[str]:
    with server.connect(url.rsplit("/", 1)[1]) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return sorted(name for (name,) in rows)


def test_tuners_on_a_dask_cluster_share_one_study_on_a_brand_new_postgres_database(env, tmp_path, postgresql_server):
    """The tuner task runs go to a real Dask cluster (a scheduler and two one-thread workers, as
    processes): every trial ran in a Dask worker, both workers tuned, none in the flow's process."""
    from flows.training import training

    storage = postgresql_server.create_database()
    assert public_tables(postgresql_server, storage) == []  # no Optuna schema yet: the tuners' first run
    with running_dask(workers=2) as cluster:
        tuning = {
            **SMALL["tuning"],
            **{"n_trials": BUDGET, "workers": 2, "storage": storage, "threads": 1, "dask_address": cluster.address},
        }
        registry = {**SMALL["registry"], "model_name": "parallel-dask-model", "experiment": "parallel-dask"}
        path = write_config(
            tmp_path / "c.yaml", env["cfg"].home, "flights", **{**SMALL, "tuning": tuning, "registry": registry}
        )

        result = training(config=str(path), as_of=env["example"].first_as_of, reason="manual")

    assert "studies" in public_tables(postgresql_server, storage)  # the schema is PostgreSQL's, not a file's
    summary = assert_one_study_ran_exactly_its_budget(storage, result)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    ran_in = {int(t.user_attrs["host"].rsplit("/", 1)[1]) for t in trials}
    assert ran_in == cluster.worker_pids  # both Dask workers tuned, and nothing else did
    assert os.getpid() not in ran_in


def test_an_unreachable_dask_scheduler_is_an_error_naming_the_setting(tmp_path):
    """What the training run fails with when nothing answers at tuning.dask_address (Dask's connect
    timeout shortened from its 30 s: the wait is Dask's, the message is ours)."""
    import dask

    from tasks.training import run_tuners

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = load_config(write_config(tmp_path / "c.yaml", tmp_path / "home", "flights", tuning={"dask_address": address}))
    assert cfg.tuning.dask_address == address
    plan = TuningPlan("unreachable", 2, 0, (1, 1))
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        with pytest.raises(RuntimeError, match=rf"cannot reach the Dask scheduler at {address} \(tuning\.dask_address"):
            run_tuners(cfg, None, plan)  # type: ignore[arg-type]  # never sent: the connection fails first


def test_tuners_open_the_planned_study_at_once_on_a_brand_new_database(postgresql_server):
    """Without the flow's training: the plan creates schema and study, then two tuners open it in the
    same instant (what the flow's tuner tasks do) and both see the one study. Without the plan the
    same two opens race to create the schema and one fails (UniqueViolation on pg_type's index)."""
    storage = postgresql_server.create_database()
    assert public_tables(postgresql_server, storage) == []
    cfg = TuningConfig(n_trials=BUDGET, workers=2, storage=storage)
    plan = plan_tuning(storage, "at-once", cfg)
    assert plan.shares == (4, 3)

    start = threading.Barrier(2)
    opened: dict[int, str] = {}
    errors: list[BaseException] = []

    def tuner(i: int) -> None:
        try:
            start.wait(timeout=30)
            opened[i] = open_study(storage, plan.study_name, cfg, cfg.seed + i).study_name
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=tuner, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert opened == {0: "at-once", 1: "at-once"}
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["at-once"]
