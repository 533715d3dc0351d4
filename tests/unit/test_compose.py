"""The production compose file, checked offline: the Compose Specification's own JSON schema (as
vendored by check-jsonschema), then what a schema cannot see: references between services, health
checks, and settings that the flows really read."""

from __future__ import annotations

import copy
import json
import re
from importlib.resources import files
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "deployments" / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved as Compose does
    return doc


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def test_the_file_follows_the_compose_specification(compose, validator):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors


def test_a_misspelt_key_would_be_caught(compose, validator):
    broken = copy.deepcopy(compose)
    broken["services"]["mlflow"]["healthchek"] = broken["services"]["mlflow"].pop("healthcheck")
    assert list(validator.iter_errors(broken))


def test_every_long_running_service_has_a_health_check_and_waits_on_real_services(compose):
    services = compose["services"]
    for name, service in services.items():
        if service.get("restart") != "no":
            assert "healthcheck" in service, f"{name} runs for good but has no health check"
        for dep, how in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on {dep}, which is not a service"
            wanted = "service_completed_successfully" if services[dep].get("restart") == "no" else "service_healthy"
            assert how["condition"] == wanted, f"{name} -> {dep}"
    for vol in (v.split(":")[0] for s in services.values() for v in s.get("volumes", [])):
        assert vol in compose["volumes"] or (COMPOSE.parent / vol).exists(), vol


def test_urls_name_services_of_the_file(compose):
    services = set(compose["services"])
    text = json.dumps(compose)
    hosts = set(re.findall(r"://(?:[^@/\"]*@)?([a-z][a-z0-9-]*):\d+", text)) - {"localhost"}
    assert hosts and hosts <= services, hosts - services


def test_every_evergreen_setting_it_passes_is_read_by_the_configs_or_the_image(compose):
    read = (ROOT / "examples" / "flights" / "config.yaml").read_text() + (ROOT / "Dockerfile").read_text()
    passed = {k for s in compose["services"].values() for k in s.get("environment", {}) if k.startswith("EVERGREEN_")}
    assert passed
    unread = {k for k in passed if k not in read}
    assert not unread, f"set in compose.yaml but read nowhere: {unread}"
    # The workers serve a pool that prefect.yaml deploys to.
    pool = compose["services"]["worker"]["environment"]["EVERGREEN_WORK_POOL"]
    assert f"name: {pool}" in (ROOT / "prefect.yaml").read_text()
