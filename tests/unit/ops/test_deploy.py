"""The `ops` compose profile, Prometheus config and Grafana dashboard, validated by parsing them."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/outbox-relay.json").read_text())
PINNED = re.compile(r"^[\w./-]+:(v?\d+(\.\d+)+[\w.-]*)(@sha256:[0-9a-f]{64})?$")
OPS = ("relay", "prometheus", "grafana")


def _services() -> dict[str, Any]:
    return dict(COMPOSE["services"])


def test_compose_has_every_service_and_the_ops_profile() -> None:
    s = _services()
    assert {"postgres", "kafka", *OPS} <= set(s)
    for name in OPS:
        assert s[name]["profiles"] == ["ops"], name
    for name in ("postgres", "kafka"):
        assert "profiles" not in s[name], "the base services stay in the default profile"


@pytest.mark.parametrize("name", ["postgres", "kafka", *OPS])
def test_images_are_pinned_and_every_service_has_a_healthcheck(name: str) -> None:
    svc = _services()[name]
    image = svc["image"]
    if name in OPS:
        assert PINNED.match(image), f"{name}: image {image!r} is not pinned to an exact version"
    assert re.search(r":v?\d", image), f"{name}: image {image!r} has no version tag"
    hc = svc["healthcheck"]
    assert hc["test"][0] in ("CMD", "CMD-SHELL") and hc["retries"] >= 3


def test_dependencies_wait_for_health() -> None:
    s = _services()
    assert s["relay"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                        "kafka": {"condition": "service_healthy"}}
    assert s["prometheus"]["depends_on"]["relay"]["condition"] == "service_healthy"
    assert s["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert (ROOT / s["relay"]["build"]["dockerfile"]).is_file()


def test_mounted_config_files_exist_and_prometheus_scrapes_the_relay() -> None:
    for name in ("prometheus", "grafana"):
        for v in _services()[name]["volumes"]:
            src = v.split(":", 1)[0]
            assert (ROOT / src).exists(), f"{name} mounts missing {src}"
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    relay = _services()["relay"]
    port = relay["environment"]["OUTBOX_RELAY_HTTP_PORT"]
    host = relay["network_mode"].removeprefix("service:") if "network_mode" in relay else "relay"
    assert job["static_configs"][0]["targets"] == [f"{host}:{port}"] and job["metrics_path"] == "/metrics"
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    assert {r["alert"] for g in alerts["groups"] for r in g["rules"]} >= {"OutboxDeadLetters", "OutboxNoReadyRelay"}
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus"


def _exported_names() -> set[str]:
    """Every sample name the relay's registry exposes (``_total``, ``_bucket``... included)."""
    m = Metrics()
    m.published.labels(shard="0").inc()
    m.retries.labels(kind="kafka").inc()
    m.lease_events.labels(event="acquired").inc()
    m.backlog.labels(shard="0").set(1)
    m.oldest_age.labels(shard="0").set(1)
    return {s.name for fam in m.registry.collect() for s in fam.samples}


def _exprs() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def test_dashboard_only_uses_metrics_the_relay_exports() -> None:
    names = _exported_names()
    used = {n for e in _exprs() for n in re.findall(r"\boutbox_[a-z_]+", e)}
    assert used and used <= names, f"unknown metrics in the dashboard: {sorted(used - names)}"


def test_dashboard_covers_the_operational_signals() -> None:
    titles = " | ".join(p["title"].lower() for p in DASHBOARD["panels"])
    for topic in ("backlog", "oldest", "publish", "latency", "dead letters", "leases", "held keys"):
        assert topic in titles, topic
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


def _datasources(node: Any) -> list[Any]:
    """Every ``datasource`` reference anywhere in the dashboard (panels, their targets, nested rows)."""
    if isinstance(node, list):
        return [d for item in node for d in _datasources(item)]
    if not isinstance(node, dict):
        return []
    own = [node["datasource"]] if "datasource" in node else []
    return own + [d for k, v in node.items() if k != "templating" for d in _datasources(v)]


def test_dashboard_takes_its_datasource_from_a_variable() -> None:
    """No panel or query names a datasource uid of one Grafana: each points at ``${datasource}``, a variable
    listing the Prometheus datasources (the default one preselected), so the dashboard imports anywhere."""
    (var,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    refs = _datasources(DASHBOARD["panels"])
    assert len(refs) == len(DASHBOARD["panels"]) + len(_exprs())
    assert all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs), refs
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus" and ds["datasources"][0]["isDefault"] is True


def test_relay_image_is_multi_stage_and_runs_as_a_numeric_non_root_user() -> None:
    lines = [ln.strip() for ln in (ROOT / "deploy/relay/Dockerfile").read_text().splitlines()]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].endswith(" AS build"), froms
    assert any(ln.startswith("COPY --from=build ") for ln in lines), "the final stage installs the built wheel"
    (user,) = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER {user}: a numeric non-root UID lets runAsNonRoot verify it"
    assert lines.index(f"USER {user}") > lines.index(froms[1]), "USER is set in the final stage"
    (extras,) = [ln.split("=", 1)[1].strip('"') for ln in lines if ln.startswith("ARG EXTRAS=")]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "relay" in extras.split(",") and set(extras.split(",")) <= set(declared), extras


def test_metric_names_are_documented() -> None:
    doc = (ROOT / "docs/operations.md").read_text()
    for fam in Metrics().registry.collect():
        assert f"`{fam.name}" in doc, f"{fam.name} is not in docs/operations.md"
