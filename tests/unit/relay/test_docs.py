"""docs/relay.md documents every setting and every metric the relay has (so they cannot drift apart)."""

from __future__ import annotations

import re
from pathlib import Path

from relay.config import RelaySettings
from relay.metrics import Metrics

DOC = (Path(__file__).resolve().parents[3] / "docs" / "relay.md").read_text()


def test_every_setting_is_documented() -> None:
    s = RelaySettings.load(environ={"OUTBOX_DATABASE_URL": "postgresql://h/d", "KAFKA_BOOTSTRAP_SERVERS": "k:1"})
    missing = [s.env_name(f) for f in RelaySettings.model_fields if f != "kafka_extra"
               and f"`{s.env_name(f)}`" not in DOC]
    assert not missing, f"undocumented settings: {missing}"


def test_no_setting_is_documented_that_the_relay_does_not_have() -> None:
    s = RelaySettings.load(environ={"OUTBOX_DATABASE_URL": "postgresql://h/d", "KAFKA_BOOTSTRAP_SERVERS": "k:1"})
    names = {s.env_name(f) for f in RelaySettings.model_fields}
    extra = sorted(set(re.findall(r"`(OUTBOX_RELAY_[A-Z0-9_]+)`", DOC)) - names)
    assert not extra, f"documented, but not settings of the relay: {extra}"


def test_every_metric_is_documented() -> None:
    names = set()
    for metric in Metrics().registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(metric.type, "")
        names.add(metric.name + suffix)
    missing = sorted(n for n in names if f"`{n}`" not in DOC)
    assert not missing, f"undocumented metrics: {missing}"
