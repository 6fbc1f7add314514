"""JsonSchemaRegistry: a registry that cannot work fails when built (ConfigError); data is checked in its JSON form."""

from __future__ import annotations

from typing import Any

import pytest

from outbox.errors import ConfigError, PayloadError, SchemaValidationError
from outbox.registry import JsonSchemaRegistry


@pytest.mark.parametrize(("schemas", "match"), [
    (None, "takes a mapping of event type to JSON Schema, got NoneType"),
    ([("a", {})], "takes a mapping of event type to JSON Schema, got list"),
    ({5: {"type": "object"}}, "event types must be non-blank strings, got 5"),
    ({" ": {"type": "object"}}, "event types must be non-blank strings"),
    ({"a": "not a schema"}, "'a' must be a JSON object .* or a boolean, got str"),
    ({"a": [1]}, "'a' must be a JSON object .* or a boolean, got list"),
    ({"a": {"type": "strin"}}, "'a' is invalid"),
    ({"a": {"$schema": 5, "type": "object"}}, "unknown \\$schema 5"),
    ({"a": {"$schema": "http://example.com/nope", "type": "object"}}, "unknown \\$schema 'http://example.com/nope'"),
    ({"a": {"$ref": "#/$defs/missing"}}, "\\$ref that cannot be resolved: '#/\\$defs/missing'"),
    ({"a": {"properties": {"n": {"items": {"$ref": "#/$defs/gone"}}}}}, "'#/\\$defs/gone'"),
    ({"a": {"$ref": "https://example.com/order.json"}}, "remote schemas are not fetched"),
    ({"a": {"$ref": "order.json"}}, "cannot be resolved: 'order.json'"),
    ({"a": {"$schema": "http://json-schema.org/draft-07/schema#", "$ref": "#/definitions/x"}}, "'#/definitions/x'"),
])
def test_a_registry_that_cannot_work_fails_when_built(schemas: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        JsonSchemaRegistry(schemas)


def test_boolean_schemas_are_supported() -> None:
    reg = JsonSchemaRegistry({"any": True, "none": False})
    reg.validate("any", {"x": 1})
    with pytest.raises(SchemaValidationError, match="'none' fails its JSON Schema"):
        reg.validate("none", {"x": 1})


def test_local_references_resolve() -> None:
    reg = JsonSchemaRegistry({
        "defs": {"$defs": {"id": {"type": "integer"}}, "properties": {"id": {"$ref": "#/$defs/id"}}},
        "anchor": {"$defs": {"id": {"$anchor": "id", "type": "integer"}}, "properties": {"id": {"$ref": "#id"}}},
        "scoped": {"$id": "urn:order", "$defs": {"line": {"$id": "urn:line", "$defs": {"n": {"type": "integer"}},
                                                          "properties": {"n": {"$ref": "#/$defs/n"}}}},
                   "properties": {"line": {"$ref": "urn:line"}}},
        "draft7": {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"id": {"type": "integer"}},
                   "properties": {"id": {"$ref": "#/definitions/id"}}},
        "tree": {"properties": {"child": {"$ref": "#"}}, "required": ["id"]},
    })
    for event_type in ("defs", "anchor", "draft7"):
        reg.validate(event_type, {"id": 1})
        with pytest.raises(SchemaValidationError, match="at id: 'x' is not of type 'integer'"):
            reg.validate(event_type, {"id": "x"})
    with pytest.raises(SchemaValidationError, match="at line/n"):
        reg.validate("scoped", {"line": {"n": "x"}})
    with pytest.raises(SchemaValidationError, match="at child: 'id' is a required property"):
        reg.validate("tree", {"id": 1, "child": {}})


def test_the_json_form_is_validated() -> None:
    reg = JsonSchemaRegistry({
        "list": {"type": "array"},
        "keys": {"type": "object", "required": ["1"]},
    })
    reg.validate("list", (1, 2))  # stored as a JSON array
    reg.validate("keys", {1: "x"})  # stored as {"1": "x"}
    with pytest.raises(PayloadError, match="not JSON-serialisable"):
        reg.validate("list", {1, 2})


def test_a_bad_pattern_the_metaschema_misses_is_a_config_error() -> None:
    # Draft 4's metaschema does not check patternProperties keys as regexes; the validator compiles them.
    reg = JsonSchemaRegistry({"a": {"$schema": "http://json-schema.org/draft-04/schema#",
                                    "patternProperties": {"(": {}}}})
    with pytest.raises(ConfigError, match="the JSON Schema registered for 'a' cannot be applied"):
        reg.validate("a", {"x": 1})
