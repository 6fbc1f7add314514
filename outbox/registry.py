"""An optional JSON-Schema registry: event type → JSON Schema, checked at write time.

``outbox.configure(registry=JsonSchemaRegistry({"com.example.order.created": {...schema...}}))``. Types with no
registered schema pass unchecked unless ``strict=True``. Any object with a ``validate(type, data)`` method that
raises :class:`~outbox.errors.SchemaValidationError` can stand in for this class.

A registry that cannot work fails when it is built, with :class:`~outbox.errors.ConfigError`, rather than on every
enqueue of one event type: each schema is checked against its draft's metaschema, an unknown ``$schema`` is
refused, and every ``$ref`` is resolved. References resolve within the schema (``#/$defs/...``, ``$id``/anchors)
and to the JSON Schema metaschemas; remote schemas are never fetched (a write path must not depend on, or be
steered by, a web server), so inline them under ``$defs``.

``jsonschema`` comes with the ``[jsonschema]`` extra and is imported when a registry is built, so that
``import outbox`` never needs it (:mod:`outbox.extras`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from outbox.config import SchemaRegistry  # noqa: F401 - its home is the settings; importable from here too
from outbox.errors import ConfigError, SchemaValidationError
from outbox.extras import missing_extra
from outbox.validation import encode_data

if TYPE_CHECKING:
    from jsonschema.protocols import Validator
    from referencing import Resource

Schema = Mapping[str, Any] | bool


class JsonSchemaRegistry:
    """Validates event data with ``jsonschema`` (each schema's ``$schema`` picks the draft; default 2020-12).

    ``schemas`` maps event types to schemas: JSON objects, or ``True``/``False`` (accept / refuse everything).
    The data is validated in its JSON form, the one that is stored and published (a tuple is an array, an
    ``int`` dict key is a string).
    """

    def __init__(self, schemas: Mapping[str, Schema], *, strict: bool = False) -> None:
        try:
            import jsonschema
        except ModuleNotFoundError as exc:
            raise missing_extra(exc, "JsonSchemaRegistry", "jsonschema") from exc
        from referencing.exceptions import Unresolvable

        self._best_match = jsonschema.exceptions.best_match
        self._unapplicable = (Unresolvable, re.error)
        if not isinstance(schemas, Mapping):
            raise ConfigError(
                f"JsonSchemaRegistry takes a mapping of event type to JSON Schema, got {type(schemas).__name__}"
            )
        self.strict = strict
        self._validators: dict[str, Validator] = {
            event_type: _compile(event_type, schema) for event_type, schema in schemas.items()
        }

    def validate(self, type: str, data: Any) -> None:
        validator = self._validators.get(type)
        if validator is None:
            if self.strict:
                raise SchemaValidationError(
                    f"no JSON Schema is registered for event type {type!r} and the registry is strict; "
                    "register one or fix the type"
                )
            return
        instance = json.loads(encode_data(data))
        try:
            error = self._best_match(validator.iter_errors(instance))
        except self._unapplicable as exc:  # checked at construction; a draft-4 patternProperties key is not
            raise ConfigError(f"the JSON Schema registered for {type!r} cannot be applied: {exc}") from exc
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise SchemaValidationError(
                f"data for event type {type!r} fails its JSON Schema at {where}: {error.message}"
            )


def _compile(event_type: object, schema: object) -> Validator:
    import referencing.jsonschema
    from jsonschema.exceptions import SchemaError

    # The official metaschemas as a referencing.Registry; jsonschema itself depends on it. It ships no type hints.
    from jsonschema_specifications import REGISTRY as metaschemas  # type: ignore[import-untyped]
    from referencing import Registry, Resource

    if not isinstance(event_type, str) or not event_type.strip():
        raise ConfigError(f"JsonSchemaRegistry: event types must be non-blank strings, got {event_type!r}")
    what = f"the JSON Schema registered for {event_type!r}"
    if isinstance(schema, Mapping):
        schema = dict(schema)  # the metaschema's "type": "object" accepts dicts only
    elif not isinstance(schema, bool):
        raise ConfigError(f"{what} must be a JSON object (a mapping) or a boolean, got {type(schema).__name__}")
    cls = _draft(what, schema)
    try:
        cls.check_schema(schema)  # type: ignore[arg-type]  # the stub forgets boolean schemas
    except SchemaError as exc:
        raise ConfigError(f"{what} is invalid: {exc.message}") from exc
    spec = referencing.jsonschema.specification_with(cls.META_SCHEMA["$schema"])
    root = Resource.from_contents(schema, default_specification=spec)
    for ref in _unresolvable_refs(metaschemas.resolver_with_root(root), root):
        raise ConfigError(
            f"{what} has a $ref that cannot be resolved: {ref!r}. Refer to definitions inside the schema "
            "(e.g. '#/$defs/name'); remote schemas are not fetched, so copy them under $defs"
        )
    # An empty registry: jsonschema adds the metaschemas to it and, unlike its default, never retrieves remote refs.
    no_retrieval: Registry[Any] = Registry()
    return cls(schema, registry=no_retrieval, format_checker=cls.FORMAT_CHECKER)


def _draft(what: str, schema: dict[str, Any] | bool) -> type[Validator]:
    import jsonschema

    default = jsonschema.Draft202012Validator
    if isinstance(schema, bool) or "$schema" not in schema:
        return default
    dialect = schema["$schema"]
    # Without a default, validator_for warns and falls back to the latest draft for an unknown $schema.
    found: type[Validator] | None = (
        jsonschema.validators.validator_for(schema, default=cast(Any, None)) if isinstance(dialect, str) else None
    )
    if found is None:
        raise ConfigError(
            f"{what} names an unknown $schema {dialect!r}; use a JSON Schema draft URI such as "
            f"{default.META_SCHEMA['$schema']!r}, or leave $schema out for 2020-12"
        )
    return found


def _unresolvable_refs(resolver: Any, resource: Resource[Any]) -> Iterator[str]:
    """Every ``$ref`` in ``resource`` and its subschemas that ``resolver`` cannot find (each scope's ``$id``
    kept, as the validator would)."""
    from referencing.exceptions import Unresolvable

    contents = resource.contents
    if isinstance(contents, Mapping) and isinstance(contents.get("$ref"), str):
        try:
            resolver.lookup(contents["$ref"])
        except Unresolvable:
            yield contents["$ref"]
    for sub in resource.subresources():
        yield from _unresolvable_refs(resolver.in_subresource(sub), sub)
