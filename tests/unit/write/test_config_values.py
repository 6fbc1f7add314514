"""configure() refuses values that would only fail later, on every enqueue: a registry class, an unusable source."""

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


def test_registry_class_instead_of_instance_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"registry must be an instance, got the class JsonSchemaRegistry"):
        outbox.configure(registry=outbox.JsonSchemaRegistry)
    outbox.configure(registry=outbox.JsonSchemaRegistry({}))  # an instance is fine


@pytest.mark.parametrize(("source", "match"), [
    ("   ", "non-blank"),
    ("\t\n", "non-blank"),
    ("s\udc80", "lone surrogate"),
    ("urn:\x00x", "without NUL"),
    (5, "non-blank string"),
])
def test_unusable_source_is_refused_at_configure(source: object, match: str) -> None:
    with pytest.raises(ConfigError, match=f"OUTBOX_SOURCE.*{match}"):
        outbox.configure(source=source)
    assert outbox.Event(topic="t", type="x").source.startswith("urn:kafka-outbox:")  # settings left unchanged


def test_empty_source_means_the_default() -> None:
    assert outbox.configure(source="").source.startswith("urn:kafka-outbox:")
    assert from_env({"OUTBOX_SOURCE": "  "}).source.startswith("urn:kafka-outbox:")
