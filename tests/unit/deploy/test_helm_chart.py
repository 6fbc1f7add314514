"""The Helm chart (deploy/helm/kafka-outbox): rendered by a real ``helm template`` and every object validated by
kubeconform against the Kubernetes API's JSON schemas, strictly (an unknown field, a duplicate key or a kind
without a schema is an error); then the properties that matter, asserted one by one.

helm, kubeconform and the schemas come from stack/k8s.py, built once into tools/k8s/ (``make test`` does it
first). A tool that cannot be built fails these tests; they never skip.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from outbox.config import DEFAULT_SHARDS
from relay.config import KAFKA_ENV_PREFIX, RelaySettings
from stack.k8s import K8sTools, resolve_k8s_tools
from stack.process import StackError

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy/helm/kafka-outbox"
DOCKERFILE = ROOT / "deploy/relay/Dockerfile"
NAMESPACE = "outbox"
RELEASE = "orders"
SECRET = "kafka-outbox"  # values.yaml's default Secret name
# What the relay's settings require, to read the relay's own view of variable names.
REQUIRED_ENV = {"OUTBOX_DATABASE_URL": "postgresql://u@h/db", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}

# Value sets every rendering of which must be valid: the defaults, the ServiceMonitor, and every optional part.
FULL = [
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
    "--set-string", "kafka.config.security\\.protocol=SASL_SSL",
    "--set", "kafka.secretConfig.sasl\\.password=sasl-password",
    "--set-string", "relay.env.OUTBOX_RELAY_BATCH_SIZE=500",
    "--set", "migration.existingSecret=outbox-owner",
    "--set", "migration.urlKey=url",
    "--set", "serviceAccountName=relay",
    "--set", "podAnnotations.team=payments",
    "--set", "extraEnv[0].name=TZ", "--set", "extraEnv[0].value=UTC",
    "--set", "extraVolumes[0].name=ca", "--set", "extraVolumes[0].secret.secretName=kafka-ca",
    "--set", "extraVolumeMounts[0].name=ca", "--set", "extraVolumeMounts[0].mountPath=/etc/kafka-ca",
    "--set", "image.tag=sha256:" + "0" * 64,
]
VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "servicemonitor": ["--set", "metrics.serviceMonitor.enabled=true"],
    "everything": FULL,
    "one-replica-no-pdb-no-migration": ["--set", "replicaCount=1", "--set", "podDisruptionBudget.enabled=false",
                                        "--set", "migration.enabled=false", "--set", "metrics.service.enabled=false"],
}


@pytest.fixture(scope="module")
def k8s() -> K8sTools:
    try:
        return resolve_k8s_tools()
    except (StackError, OSError) as exc:
        pytest.fail(f"helm / kubeconform could not be built, and the chart tests fail rather than skip: {exc}",
                    pytrace=False)


def render(k8s: K8sTools, *values: str) -> str:
    res = k8s.helm_run("template", "--namespace", NAMESPACE, RELEASE, str(CHART), *values)
    assert res.returncode == 0, res.stderr
    return res.stdout


def objects(manifests: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifests) if doc]


def by_kind(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objs]
    assert len(kinds) == len(set(kinds)), f"one object of each kind expected: {kinds}"
    return {o["kind"]: o for o in objs}


@pytest.fixture(scope="module")
def default(k8s: K8sTools) -> dict[str, dict[str, Any]]:
    return by_kind(objects(render(k8s)))


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container(obj)["env"]}


def _kubeconform(k8s: K8sTools, manifests: str) -> dict[str, Any]:
    res = k8s.kubeconform_run(manifests)
    try:
        report: dict[str, Any] = json.loads(res.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"kubeconform (exit {res.returncode}) printed no report: {res.stdout}{res.stderr}")
    return report | {"exit": res.returncode}


# --- validity ----------------------------------------------------------------------------------------------------

def test_helm_lint_finds_nothing(k8s: K8sTools) -> None:
    res = k8s.helm_run("lint", "--strict", str(CHART))
    assert res.returncode == 0 and "[WARNING]" not in res.stdout and "[ERROR]" not in res.stdout, res.stdout

@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_rendered_object_is_valid_against_the_kubernetes_schemas(k8s: K8sTools, name: str) -> None:
    manifests = render(k8s, *VALUE_SETS[name])
    count = len(objects(manifests))
    report = _kubeconform(k8s, manifests)
    bad = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert report["exit"] == 0 and not bad, bad
    assert report["summary"] == {"valid": count, "invalid": 0, "errors": 0, "skipped": 0}


def test_the_validator_rejects_what_the_api_server_would(k8s: K8sTools, default: dict[str, dict[str, Any]]) -> None:
    """The check above is only worth something if the schemas are found and strict: a misspelt field, a wrong type
    and an unknown ServiceMonitor field are each an error, and so is a kind nobody has a schema for."""
    deployment = json.loads(json.dumps(default["Deployment"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong_type = json.loads(json.dumps(default["PodDisruptionBudget"]))
    wrong_type["spec"]["unhealthyPodEvictionPolicy"] = 3
    monitor = by_kind(objects(render(k8s, "--set", "metrics.serviceMonitor.enabled=true")))["ServiceMonitor"]
    monitor["spec"]["endpoints"][0]["scrapeEvery"] = "30s"
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    report = _kubeconform(k8s, yaml.safe_dump_all([deployment, wrong_type, monitor, unknown]))
    results = {r["kind"]: (r["status"], r["msg"]) for r in report["resources"]}
    assert report["exit"] != 0
    assert {kind: status for kind, (status, _) in results.items()} == {
        "Deployment": "statusInvalid", "PodDisruptionBudget": "statusInvalid", "ServiceMonitor": "statusInvalid",
        "Gadget": "statusError"}, report
    for kind, word in (("Deployment", "readinesProbe"), ("PodDisruptionBudget", "unhealthyPodEvictionPolicy"),
                       ("ServiceMonitor", "scrapeEvery"), ("Gadget", "could not find schema")):
        assert word in results[kind][1], results[kind]


# --- the relay ---------------------------------------------------------------------------------------------------

def test_the_default_image_tag_is_this_release() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "Chart.yaml appVersion names the relay image of this release"


def test_defaults_render_the_relay_its_budget_its_migration_and_its_metrics_service(
        default: dict[str, dict[str, Any]]) -> None:
    assert set(default) == {"Deployment", "PodDisruptionBudget", "Job", "Service"}
    assert default["Deployment"]["spec"]["replicas"] == 2
    # Pinned to the product's default, which writers use unless told otherwise: a change there is a chart change.
    assert _env(default["Deployment"])["OUTBOX_SHARDS"]["value"] == str(DEFAULT_SHARDS)


def test_probes_use_the_relays_http_port_and_paths(default: dict[str, dict[str, Any]]) -> None:
    c = _container(default["Deployment"])
    http_port = RelaySettings.model_fields["http_port"].default
    assert c["ports"] == [{"name": "http", "containerPort": http_port, "protocol": "TCP"}]
    assert _env(default["Deployment"])["OUTBOX_RELAY_HTTP_PORT"]["value"] == str(http_port)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_another_http_port_moves_the_probes_and_the_service(k8s: K8sTools) -> None:
    objs = by_kind(objects(render(k8s, "--set", "relay.httpPort=9200")))
    c = _container(objs["Deployment"])
    assert c["ports"][0]["containerPort"] == 9200
    assert _env(objs["Deployment"])["OUTBOX_RELAY_HTTP_PORT"]["value"] == "9200"
    assert objs["Service"]["spec"]["ports"] == [{"name": "metrics", "port": 9108, "targetPort": "http",
                                                 "protocol": "TCP"}]


def test_secrets_come_from_secret_key_refs_only(default: dict[str, dict[str, Any]]) -> None:
    for kind in ("Deployment", "Job"):
        env = _env(default[kind])
        assert env["OUTBOX_DATABASE_URL"] == {"name": "OUTBOX_DATABASE_URL", "valueFrom": {
            "secretKeyRef": {"name": SECRET, "key": "database-url"}}}, kind
    assert _env(default["Deployment"])["KAFKA_BOOTSTRAP_SERVERS"]["valueFrom"] == {
        "secretKeyRef": {"name": SECRET, "key": "bootstrap-servers"}}
    assert not [o for o in default.values() if o["kind"] == "Secret"], "the chart creates no Secret"


def test_kafka_settings_become_the_relays_passthrough_variables(k8s: K8sTools) -> None:
    env = _env(by_kind(objects(render(k8s, *FULL)))["Deployment"])
    assert env["OUTBOX_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["OUTBOX_KAFKA_SASL_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": SECRET, "key": "sasl-password"}}
    # The relay's own reading of those names: OUTBOX_KAFKA_<NAME> -> <name> with "_" as ".".
    settings = RelaySettings.load(environ=REQUIRED_ENV | {n: "x" for n in env if n.startswith(KAFKA_ENV_PREFIX)})
    assert set(settings.kafka_extra) == {"security.protocol", "sasl.password"}


def test_every_variable_the_chart_sets_is_a_relay_setting(k8s: K8sTools) -> None:
    settings = RelaySettings.load(environ=REQUIRED_ENV)
    known = {settings.env_name(field) for field in RelaySettings.model_fields}
    env = _env(by_kind(objects(render(k8s, *FULL)))["Deployment"])
    ours = {n for n in env if n.startswith(("OUTBOX_", "KAFKA_")) and not n.startswith(KAFKA_ENV_PREFIX)}
    assert ours and ours <= known, sorted(ours - known)


def test_pods_run_non_root_read_only_without_capabilities(default: dict[str, dict[str, Any]]) -> None:
    uid = int(re.search(r"^USER (\d+)", DOCKERFILE.read_text(), re.M).group(1))  # type: ignore[union-attr]
    for kind in ("Deployment", "Job"):
        pod = default[kind]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        sc = _container(default[kind])["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "mountPath": "/tmp"} in _container(default[kind])["volumeMounts"]
        resources = _container(default[kind])["resources"]
        assert set(resources) == {"requests", "limits"} and resources["limits"]["memory"]


def test_the_grace_period_covers_the_drain(default: dict[str, dict[str, Any]]) -> None:
    pod = default["Deployment"]["spec"]["template"]["spec"]
    drain = float(_env(default["Deployment"])["OUTBOX_RELAY_DRAIN_DEADLINE_S"]["value"])
    assert drain == RelaySettings.model_fields["drain_deadline_s"].default
    assert pod["terminationGracePeriodSeconds"] >= drain + 10


def test_the_pdb_covers_the_relay_pods(default: dict[str, dict[str, Any]]) -> None:
    pdb = default["PodDisruptionBudget"]["spec"]
    labels = default["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == default["Deployment"]["spec"]["selector"]["matchLabels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()


# --- the migration Job -------------------------------------------------------------------------------------------

def test_the_migration_job_is_a_pre_install_and_pre_upgrade_hook(default: dict[str, dict[str, Any]]) -> None:
    job = default["Job"]
    assert job["metadata"]["annotations"] == {
        "helm.sh/hook": "pre-install,pre-upgrade", "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded"}
    c, relay = _container(job), _container(default["Deployment"])
    assert c["image"] == relay["image"] and c["args"] == ["migrate", "upgrade"] and relay["args"] == ["relay"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert _env(job)["OUTBOX_SCHEMA"] == _env(default["Deployment"])["OUTBOX_SCHEMA"]
    assert "serviceAccountName" not in job["spec"]["template"]["spec"], \
        "a pre-install hook runs before any object of the chart exists"


def test_the_migration_can_log_in_as_the_schema_owner(k8s: K8sTools) -> None:
    env = _env(by_kind(objects(render(k8s, *FULL)))["Job"])
    assert env["OUTBOX_DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "outbox-owner", "key": "url"}}


# --- metrics -----------------------------------------------------------------------------------------------------

def test_the_metrics_service_selects_the_relays_even_when_not_ready(default: dict[str, dict[str, Any]]) -> None:
    svc = default["Service"]["spec"]
    labels = default["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= labels.items() and svc["publishNotReadyAddresses"] is True
    assert svc["ports"][0]["targetPort"] == "http"


def test_the_service_monitor_is_off_by_default_and_scrapes_the_metrics_service(k8s: K8sTools) -> None:
    objs = by_kind(objects(render(k8s, "--set", "metrics.serviceMonitor.enabled=true")))
    spec = objs["ServiceMonitor"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= objs["Service"]["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == objs["Service"]["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"


# --- values the chart refuses --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    (["--set", "terminationGracePeriodSeconds=10"], "must exceed relay.drainDeadlineSeconds"),
    (["--set", "relay.httpPort=-1"], "/relay/httpPort"),
    (["--set", "database.existingSecret="], "/database/existingSecret"),
    (["--set", "kafka.existingSecret="], "/kafka/existingSecret"),
    (["--set", "replicas=3"], "'replicas' not allowed"),
    (["--set", "relay.env.KAFKA_BOOTSTRAP_SERVERS=k:9092"], "does not match pattern '^OUTBOX_RELAY_"),
    (["--set", "relay.env.OUTBOX_RELAY_HTTP_PORT=9000"], "invalid propertyName 'OUTBOX_RELAY_HTTP_PORT'"),
    (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["--set", "metrics.service.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"],
     "needs metrics.service.enabled"),
])
def test_the_chart_refuses_values_that_cannot_work(k8s: K8sTools, values: list[str], message: str) -> None:
    res = k8s.helm_run("template", RELEASE, str(CHART), *values)
    assert res.returncode != 0 and message in res.stderr, res.stderr
