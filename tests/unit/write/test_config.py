"""Settings: defaults, environment parsing, configure(), and errors that name the variable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import outbox
from outbox.config import from_env
from outbox.errors import ConfigError


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    outbox.configure()


def test_defaults() -> None:
    s = from_env({})
    assert (s.schema, s.shards, s.max_payload_bytes, s.max_key_bytes) == ("outbox", 8, 1_048_576, 1024)
    assert s.source.startswith("urn:kafka-outbox:") and s.registry is None


def test_env_values() -> None:
    s = from_env({"OUTBOX_SCHEMA": "app_outbox", "OUTBOX_SHARDS": " 16 ", "OUTBOX_SOURCE": "/svc/orders",
                  "OUTBOX_MAX_PAYLOAD_BYTES": "2097152", "OUTBOX_MAX_KEY_BYTES": "256"})
    assert (s.schema, s.shards, s.source, s.max_payload_bytes, s.max_key_bytes) == (
        "app_outbox", 16, "/svc/orders", 2_097_152, 256)


@pytest.mark.parametrize(("var", "value"), [
    ("OUTBOX_SHARDS", "eight"), ("OUTBOX_SHARDS", "0"), ("OUTBOX_SHARDS", "5000"),
    ("OUTBOX_SCHEMA", "bad-name"), ("OUTBOX_SCHEMA", 'x"; drop'), ("OUTBOX_MAX_PAYLOAD_BYTES", "10"),
    ("OUTBOX_MAX_KEY_BYTES", "-1"), ("OUTBOX_MAX_KEY_BYTES", "9999"),
])
def test_bad_env_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        from_env({var: value})


def test_configure_in_code_and_event_default_source() -> None:
    outbox.configure(source="/svc/test", shards=4)
    assert outbox.settings().shards == 4
    assert outbox.Event(topic="t", type="x").source == "/svc/test"


def test_configure_rejects_unknown_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        outbox.configure(shard=3)
    with pytest.raises(ConfigError, match="OUTBOX_SHARDS"):
        outbox.configure(shards=True)
    with pytest.raises(ConfigError, match="validate"):
        outbox.configure(registry=object())


def test_configure_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_SHARDS", "3")
    assert outbox.configure().shards == 3
