"""The Kubernetes definition of the production stack, checked offline: every document of
deployments/k8s/evergreen.yaml against the Kubernetes OpenAPI schemas bundled by kubernetes-validate
(strict: an unknown field fails), both Helm values files against the charts' own values.schema.json
(vendored in deployments/k8s/schemas/), and what no schema sees: references between objects,
Services that reach their pods, probes, the work pool, and the pool's base job template."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

K8S = ROOT / "deployments" / "k8s"
MANIFESTS = K8S / "evergreen.yaml"
CHARTS = ("prefect-server", "prefect-worker")
# A floor (the files use nothing newer than 1.31) and the newest minor the package ships.
K8S_VERSIONS = ("1.31.0", "1.37.0")
IMAGE = "evergreen:latest"


def load(path: Any) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]


@pytest.fixture(scope="module")
def values() -> dict[str, dict[str, Any]]:
    return {chart: load(K8S / f"{chart}-values.yaml") for chart in CHARTS}


def chart_schema(chart: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((K8S / "schemas" / f"{chart}.values.schema.json").read_text())
    return schema


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def k8s_errors(doc: dict[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{doc['kind']}/{doc['metadata'].get('name')}: {'/'.join(map(str, e.path))}: {e.message}"]
    return []


# --- the Kubernetes schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_document_follows_the_kubernetes_schema(docs, version):
    assert {d["kind"] for d in docs} >= {"ConfigMap", "Secret", "Deployment", "Service"}
    errors = [e for d in docs for e in k8s_errors(d, version)]
    assert not errors, errors


def test_a_broken_document_fails_kubernetes_validation(docs):
    gateway = by_kind(docs, "Deployment")["evergreen-gateway"]
    misspelt = copy.deepcopy(gateway)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    assert k8s_errors(misspelt, K8S_VERSIONS[-1])
    wrong_type = copy.deepcopy(gateway)
    wrong_type["spec"]["replicas"] = "two"
    assert k8s_errors(wrong_type, K8S_VERSIONS[-1])


# --- the charts' schemas ----------------------------------------------------------------------------


def chart_errors(chart: str, doc: dict[str, Any]) -> list[str]:
    # Helm validates values with a draft-07 validator; the charts' "$schema" names no draft.
    validator = jsonschema.Draft7Validator(chart_schema(chart))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def undeclared(doc: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Keys set in the values that the chart's schema does not declare. The charts allow unknown keys
    at the top (additionalProperties), so a misspelt key would be silently ignored by Helm; free-form
    maps (env lists, labels, the base job template) have no properties and are not descended into."""
    props = schema.get("properties")
    if not isinstance(doc, dict) or props is None:
        return
    for key, value in doc.items():
        if key not in props:
            yield f"{path}{key}"
        else:
            yield from undeclared(value, props[key], f"{path}{key}.")


@pytest.mark.parametrize("chart", CHARTS)
def test_values_follow_the_charts_schema_and_set_only_declared_keys(values, chart):
    assert not chart_errors(chart, values[chart])
    assert not list(undeclared(values[chart], chart_schema(chart)))


def test_a_wrong_value_or_a_misspelt_key_would_be_caught(values):
    wrong = copy.deepcopy(values["prefect-worker"])
    wrong["worker"]["apiConfig"] = "selfHosted"
    assert chart_errors("prefect-worker", wrong)
    misspelt = copy.deepcopy(values["prefect-server"])
    misspelt["externalDatabse"] = misspelt.pop("externalDatabase")
    assert not chart_errors("prefect-server", misspelt)  # the schema alone lets it through...
    assert list(undeclared(misspelt, chart_schema("prefect-server"))) == ["externalDatabse"]  # ...this does not


# --- references between objects ---------------------------------------------------------------------


def references(node: Any) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every ConfigMap, Secret and claim a pod spec refers to."""
    if isinstance(node, list):
        for item in node:
            yield from references(item)
    elif isinstance(node, dict):
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if field in node:
                yield kind, node[field]["name"], None
        for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if field in node:
                yield kind, node[field]["name"], node[field]["key"]
        if "persistentVolumeClaim" in node:
            yield "PersistentVolumeClaim", node["persistentVolumeClaim"]["claimName"], None
        for value in node.values():
            yield from references(value)


def missing(docs: list[dict[str, Any]], refs: Iterator[tuple[str, str, str | None]]) -> list[str]:
    out = []
    for kind, name, key in refs:
        target = by_kind(docs, kind).get(name)
        if target is None:
            out.append(f"{kind}/{name}")
        elif key is not None and key not in {**target.get("data", {}), **target.get("stringData", {})}:
            out.append(f"{kind}/{name}:{key}")
    return out


def base_job_template(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    template: dict[str, Any] = values["prefect-worker"]["worker"]["config"]["baseJobTemplate"]["configuration"]
    return template


def test_everything_referred_to_exists_in_the_file(docs, values):
    refs = list(references([d["spec"]["template"] for d in by_kind(docs, "Deployment").values()]))
    assert refs
    # the flow-run Jobs (the worker's base job template) and the Prefect server's database secret
    refs += references(base_job_template(values)["job_configuration"]["job_manifest"])
    db = values["prefect-server"]["externalDatabase"]
    refs.append(("Secret", db["existingSecret"], db["connectionStringSecretKey"]))
    assert not missing(docs, iter(refs))


def test_a_dangling_reference_would_be_caught(docs):
    gateway = copy.deepcopy(by_kind(docs, "Deployment")["evergreen-gateway"]["spec"]["template"])
    gateway["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"] = "evergreen-settings"
    assert missing(docs, references(gateway)) == ["ConfigMap/evergreen-settings"]
    mlflow = copy.deepcopy(by_kind(docs, "Deployment")["mlflow"]["spec"]["template"])
    (key_ref,) = [e for e in mlflow["spec"]["containers"][0]["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI"]
    key_ref["valueFrom"]["secretKeyRef"]["key"] = "BACKEND_URI"
    assert missing(docs, references(mlflow)) == ["Secret/mlflow-server:BACKEND_URI"]


def service_problems(docs: list[dict[str, Any]]) -> list[str]:
    out = []
    deployments = by_kind(docs, "Deployment")
    for name, svc in by_kind(docs, "Service").items():
        selector = svc["spec"]["selector"]
        chosen = [
            d for d in deployments.values() if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        if len(chosen) != 1:
            out.append(f"{name}: selects {len(chosen)} Deployments")
            continue
        ports = [p for c in chosen[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if not any(target in (p.get("name"), p["containerPort"]) for p in ports):
                out.append(f"{name}: targetPort {target} is no container port of {chosen[0]['metadata']['name']}")
    return out


def test_each_service_selects_one_deployment_and_targets_its_ports(docs):
    assert not service_problems(docs)
    for d in by_kind(docs, "Deployment").values():  # and the Deployment's own selector picks its pods
        assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_a_wrong_selector_or_port_would_be_caught(docs):
    broken = copy.deepcopy(docs)
    svc = by_kind(broken, "Service")["mlflow"]
    svc["spec"]["ports"][0]["targetPort"] = "web"
    by_kind(broken, "Service")["evergreen-gateway"]["spec"]["selector"]["app.kubernetes.io/component"] = "serving"
    assert service_problems(broken) == [
        "mlflow: targetPort web is no container port of mlflow",
        "evergreen-gateway: selects 0 Deployments",
    ]


# --- what the containers run ------------------------------------------------------------------------


def containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: c
        for d in by_kind(docs, "Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }


def test_every_container_has_readiness_and_liveness_probes_on_its_port(docs, values):
    for name, c in containers(docs).items():
        port_names = {p.get("name") for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in c, f"{name} has no {probe}"
            action = c[probe].get("httpGet") or c[probe].get("tcpSocket")
            assert action["port"] in port_names, f"{name} {probe} port"
    # the charts' containers: the server's probes and the worker's --with-healthcheck probe
    server = values["prefect-server"]["server"]
    assert all(server[p]["enabled"] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert values["prefect-worker"]["worker"]["livenessProbe"]["enabled"]


def test_the_gateway_runs_as_documented(docs):
    gateway = by_kind(docs, "Deployment")["evergreen-gateway"]
    c = containers(docs)["evergreen-gateway"]
    assert gateway["spec"]["replicas"] == 2
    assert c["image"] == IMAGE
    assert c["command"][:3] == ["python", "-m", "deployments.gateway"]
    port = int(c["command"][c["command"].index("--port") + 1])
    assert c["command"][c["command"].index("--host") + 1] == "0.0.0.0"
    assert port == load(ROOT / "examples" / "flights" / "config.yaml")["serving"]["port"] == 8800
    assert [p["containerPort"] for p in c["ports"]] == [port]
    # readiness is the route that says a champion is loaded
    assert '@app.get("/health")' in (ROOT / "deployments" / "gateway.py").read_text()
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"


def env_names(c: dict[str, Any]) -> set[str]:
    return {e["name"] for e in c.get("env", [])}


def test_the_mlflow_server_uses_postgres_from_a_secret_and_s3_through_the_server(docs):
    c = containers(docs)["mlflow"]
    assert c["image"] == IMAGE
    assert c["command"] == ["mlflow", "server"]
    args = dict(a.removeprefix("--").split("=", 1) for a in c["args"])
    assert args["backend-store-uri"] == "$(MLFLOW_BACKEND_STORE_URI)"
    assert args["artifacts-destination"].startswith("s3://")
    assert args["port"] == "5000"
    # Kubernetes passes an undefined $(VAR) on literally: every one must be in the container's env.
    for var in re.findall(r"\$\((\w+)\)", " ".join(c["args"])):
        assert var in env_names(c), var
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"].startswith("http://")
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    secret = by_kind(docs, "Secret")["mlflow-server"]["stringData"]
    assert secret["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    # clients reach it as mlflow:5000, a Host header MLflow refuses unless allowed
    from mlflow.server.security_utils import is_allowed_host_header

    assert is_allowed_host_header(args["allowed-hosts"].split(","), "mlflow:5000")


def read_settings() -> str:
    """Text of everything that reads EVERGREEN_* settings: the configs and the code."""
    paths = [*ROOT.glob("examples/*/config.yaml"), *ROOT.glob("configs/*.yaml"), *ROOT.glob("evergreen/**/*.py")]
    return "\n".join(p.read_text() for p in [*paths, ROOT / "deployments" / "gateway.py"])


def test_settings_are_ones_evergreen_reads_and_urls_name_services(docs, values):
    config = by_kind(docs, "ConfigMap")["evergreen-config"]["data"]
    secret = by_kind(docs, "Secret")["evergreen-env"]["stringData"]
    text = read_settings()
    for key in [*config, *secret]:
        if key.startswith("EVERGREEN_"):
            assert key in text, f"{key} is read by nothing"
    assert {"EVERGREEN_TRACKING_URI", "EVERGREEN_ARTIFACT_LOCATION", "EVERGREEN_HOME"} <= set(config)
    assert "EVERGREEN_OPTUNA_STORAGE" in secret  # it carries a password
    # every in-cluster URL names a Service of the file, the prefect-server chart's (port 4200) or a
    # backing service the head of evergreen.yaml asks for
    services = {n: {p["port"] for p in s["spec"]["ports"]} for n, s in by_kind(docs, "Service").items()}
    services["prefect-server"] = {4200}
    head = (ROOT / "deployments" / "k8s" / "evergreen.yaml").read_text().split("apiVersion", 1)[0]
    for host, port in re.findall(r"service `([a-z][a-z0-9-]*):(\d+)`", head):
        services.setdefault(host, set()).add(int(port))
    assert {"postgresql", "minio", "redis-master", "dask-scheduler"} <= set(services)
    for key, url in [*config.items(), *secret.items()]:
        if m := re.match(r"[a-z][a-z0-9+]*://(?:[^@/]*@)?([^:/]+):(\d+)", url):
            assert int(m[2]) in services.get(m[1], set()), f"{key}={url}"
    worker = values["prefect-worker"]["worker"]
    assert worker["selfHostedServerApiConfig"]["apiUrl"] == config["PREFECT_API_URL"]


def test_placeholders_are_marked_in_every_secret(docs):
    for name, secret in by_kind(docs, "Secret").items():
        assert "CHANGE-ME" in "".join(secret["stringData"].values()), name


# --- Prefect: version, pool and the flow-run Jobs ---------------------------------------------------


def test_server_and_workers_run_the_locked_prefect_version(values):
    version = load(ROOT / "prefect.yaml")["prefect-version"]
    assert values["prefect-server"]["global"]["prefect"]["image"]["prefectTag"].startswith(f"{version}-")
    assert values["prefect-worker"]["worker"]["image"]["prefectTag"].startswith(f"{version}-")
    assert values["prefect-server"]["postgresql"]["enabled"] is False  # the shared database, not the subchart


def kubernetes_pools() -> set[str]:
    """Pools of the deployments meant for Kubernetes workers, in every Prefect project file."""
    pools = set()
    for path in [ROOT / "prefect.yaml", *(ROOT / "deployments").glob("prefect*.yaml")]:
        for d in load(path).get("deployments", []):
            if d["name"].endswith("-kubernetes"):
                pools.add(d["work_pool"]["name"])
    return pools or {"evergreen-kubernetes"}


def test_the_worker_serves_the_pool_of_the_kubernetes_deployments(values):
    config = values["prefect-worker"]["worker"]["config"]
    assert config["type"] == "kubernetes"
    assert kubernetes_pools() == {config["workPool"]}
    assert values["prefect-worker"]["worker"]["apiConfig"] == "selfHostedServer"


def without_evergreen_additions(job_configuration: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(job_configuration)
    job = out["job_manifest"]["spec"]
    pod = job["template"]["spec"]
    pod.pop("securityContext")
    for key in ("completions", "parallelism"):  # moved from the pod spec (Prefect's default) to the Job
        pod[key] = job.pop(key)
    for c in pod["containers"]:
        c.pop("envFrom")
    return out


def test_the_base_job_template_is_prefects_default_plus_the_clusters_settings(values):
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    mine = base_job_template(values)
    assert without_evergreen_additions(mine["job_configuration"]) == default["job_configuration"]
    # why those two moved: Prefect's default still puts them in the pod spec, where a Job has no such field
    assert default["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["completions"] == 1
    expected = copy.deepcopy(default["variables"])
    expected["properties"]["namespace"]["default"] = "evergreen"
    assert mine["variables"] == expected
    # the kubernetes deployments' job variables fit it
    for path in [ROOT / "prefect.yaml", *(ROOT / "deployments").glob("prefect*.yaml")]:
        for d in load(path).get("deployments", []):
            if d["name"].endswith("-kubernetes"):
                assert not list(
                    jsonschema.Draft202012Validator(mine["variables"]).iter_errors(d["work_pool"]["job_variables"])
                )


def test_a_flow_run_job_rendered_from_the_template_is_a_valid_job(values):
    from prefect.utilities.templating import apply_values

    template = base_job_template(values)
    job_values = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    job_values |= {
        "name": "training-abc",
        "image": IMAGE,
        "command": ["prefect", "flow-run", "execute"],
        "env": [{"name": "PREFECT__FLOW_RUN_ID", "value": "abc"}],
        "labels": {"app.kubernetes.io/name": "evergreen"},
        "annotations": {},
        "finished_job_ttl": 3600,
        "cpu_request": "1",
        "cpu_limit": "4",
        "memory_request": "2Gi",
        "memory_limit": "8Gi",
        "service_account_name": "default",
    }
    job = apply_values(template["job_configuration"]["job_manifest"], job_values)
    assert job["metadata"]["namespace"] == "evergreen"
    for version in K8S_VERSIONS:
        assert not k8s_errors(job, version)
    job["spec"]["template"]["spec"]["containers"][0]["envFrom"] = {"configMapRef": {"name": "evergreen-config"}}
    assert k8s_errors(job, K8S_VERSIONS[-1])  # a map where a list belongs
