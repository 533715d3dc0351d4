"""The image-based deployments, checked offline: each pool's job variables against the JSON schema of
the real worker's base job template (prefect-docker, prefect-kubernetes), the same flows, schedules,
trigger and limits as prefect.yaml, and nothing that points at a host path."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

IMAGES = ROOT / "deployments" / "prefect-images.yaml"
SAME_AS_LOCAL = ("entrypoint", "description", "tags", "parameters", "schedules", "triggers", "concurrency_limit")


def worker_schemas() -> dict[str, dict[str, Any]]:
    from prefect_docker.worker import DockerWorker
    from prefect_kubernetes.worker import KubernetesWorker

    return {w.type: w.get_default_base_job_template()["variables"] for w in (DockerWorker, KubernetesWorker)}


@pytest.fixture(scope="module")
def images() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(IMAGES.read_text())
    return doc


def pool_type(deployment: dict[str, Any]) -> str:
    return deployment["name"].rsplit("-", 1)[1]


def local_deployments() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}


def differences(image_deployment: dict[str, Any], local: dict[str, dict[str, Any]]) -> list[str]:
    """The keys in which an image deployment differs from its prefect.yaml original."""
    base = local[image_deployment["name"].rsplit("-", 1)[0]]
    return [key for key in SAME_AS_LOCAL if image_deployment.get(key) != base.get(key)]


def test_job_variables_follow_each_workers_own_schema(images):
    schemas = worker_schemas()
    for d in images["deployments"]:
        errors = list(
            jsonschema.Draft202012Validator(schemas[pool_type(d)]).iter_errors(d["work_pool"]["job_variables"])
        )
        assert not errors, (d["name"], [e.message for e in errors])


def test_a_wrong_job_variable_would_be_caught():
    schema = worker_schemas()["docker"]
    assert list(jsonschema.Draft202012Validator(schema).iter_errors({"volumes": "evergreen-home:/data"}))


def test_each_pool_runs_the_same_deployments_as_the_local_pool(images):
    local = local_deployments()
    by_pool: dict[str, set[str]] = {}
    for d in images["deployments"]:
        by_pool.setdefault(pool_type(d), set()).add(d["name"].rsplit("-", 1)[0])
        assert not differences(d, local), f"{d['name']} differs from prefect.yaml in {differences(d, local)}"
    assert by_pool == {"docker": set(local), "kubernetes": set(local)}
    pools = {pool_type(d): d["work_pool"]["name"] for d in images["deployments"]}
    assert pools == {"docker": "evergreen-docker", "kubernetes": "evergreen-kubernetes"}


def test_a_drifted_copy_would_be_caught(images):
    drifted = copy.deepcopy(next(d for d in images["deployments"] if d["name"] == "retrain-on-drift-docker"))
    drifted["triggers"][0]["within"] = 60
    assert differences(drifted, local_deployments()) == ["triggers"]


def test_runs_use_the_built_image_and_no_host_path(images):
    workdir = re.search(r"^WORKDIR (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert workdir
    (pull,) = images["pull"]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == workdir.group(1)
    (build,) = images["build"]
    assert build["prefect_docker.deployments.steps.build_docker_image"]["dockerfile"] == "Dockerfile"
    for d in images["deployments"]:
        variables = d["work_pool"]["job_variables"]
        assert variables["image"] == "{{ build-image.image }}"
        for volume in variables.get("volumes", []):
            assert not volume.startswith(("/", ".", "~")), f"{d['name']}: host path {volume}"


def test_the_image_installs_the_prod_group_and_starts_a_worker():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("--group prod") == 2  # the dependency layer and the project layer
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.M)
    assert cmd and "prefect worker start" in cmd.group(1)
