"""An optional JSON-Schema registry: event type → JSON Schema, checked at write time.

``outbox.configure(registry=SchemaRegistry({"com.example.order.created": {...schema...}}))``. Types with no
registered schema pass unchecked unless ``strict=True``. Any object with a ``validate(type, data)`` method that
raises :class:`~outbox.errors.SchemaValidationError` can stand in for this class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import jsonschema
from jsonschema.exceptions import SchemaError

from outbox.errors import ConfigError, SchemaValidationError


class SchemaRegistry(Protocol):
    def validate(self, type: str, data: Any) -> None:
        """Raise SchemaValidationError when ``data`` does not fit the schema of ``type``."""


class JsonSchemaRegistry:
    """Validates event data with ``jsonschema`` (each schema's ``$schema`` picks the draft; default 2020-12)."""

    def __init__(self, schemas: Mapping[str, Mapping[str, Any]], *, strict: bool = False) -> None:
        self.strict = strict
        self._validators: dict[str, Any] = {}
        for event_type, schema in schemas.items():
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            try:
                cls.check_schema(dict(schema))
            except SchemaError as exc:
                raise ConfigError(f"the JSON Schema registered for {event_type!r} is invalid: {exc.message}") from exc
            self._validators[event_type] = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def validate(self, type: str, data: Any) -> None:
        validator = self._validators.get(type)
        if validator is None:
            if self.strict:
                raise SchemaValidationError(
                    f"no JSON Schema is registered for event type {type!r} and the registry is strict; "
                    "register one or fix the type"
                )
            return
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise SchemaValidationError(
                f"data for event type {type!r} fails its JSON Schema at {where}: {error.message}"
            )
