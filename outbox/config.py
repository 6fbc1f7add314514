"""The library's settings: the only place ``outbox`` reads environment variables.

One frozen :class:`Settings` value per process, read from the environment on first use and replaceable in code
with :func:`configure`. A bad value fails fast with a :class:`~outbox.errors.ConfigError` naming the variable.

=========================== ============ =============================================================
variable                    default      meaning (unit, trade-off)
=========================== ============ =============================================================
``OUTBOX_SCHEMA``           ``outbox``   Postgres schema holding the outbox tables (a SQL identifier).
``OUTBOX_SHARDS``           ``8``        Shards (1..1024). Every writer *and* the relay must agree: a key's
                                         shard is stored at write time. More shards = more relay
                                         instances can share the work, but more (smaller) Kafka
                                         transactions: higher latency on small machines. See
                                         docs/decisions/014-default-shard-count.md.
``OUTBOX_MAX_PAYLOAD_BYTES`` ``1048576`` Largest Kafka record in bytes, counted as Kafka counts it: key,
                                         payload, every header (the relay's ce_*/outbox-* ones too) with
                                         its framing, and the record batch overhead. The relay's producer
                                         ``message.max.bytes`` defaults to the same value; the broker's
                                         (1048588) and the topic's ``max.message.bytes`` must allow it.
                                         Raise them all together (docs/write-side.md).
``OUTBOX_MAX_KEY_BYTES``    ``1024``     Largest key in bytes. Keys are indexed in ``key_sequence``; a btree
                                         entry cannot exceed ~2.7 kB, so keep keys short.
``OUTBOX_SOURCE``           see below    Default CloudEvents ``source``; ``urn:kafka-outbox:<hostname>``.
=========================== ============ =============================================================

The optional JSON-Schema registry (``registry``) is code-only: pass it to :func:`configure`.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, TypeGuard

from outbox.errors import ConfigError


class SchemaRegistry(Protocol):
    """What ``registry=`` takes (``outbox.registry.JsonSchemaRegistry`` is one). Declared here, beside the settings
    that hold it, so the settings need not import the registry module (which imports the writers' validation)."""

    def validate(self, type: str, data: Any) -> None:
        """Raise SchemaValidationError when ``data`` does not fit the schema of ``type``."""

MAX_IDENT = 63
"""Postgres keeps this many characters of an identifier (NAMEDATALEN - 1) and silently cuts the rest."""
IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""A plain SQL identifier (schema and role names): never needs quoting."""
_IDENT = re.compile(IDENT_PATTERN)
MAX_SHARDS = 1024


DEFAULT_MAX_RECORD_BYTES = 1_048_576
"""The largest record by default (1 MiB): writers refuse larger events, and the relay's producer sets its
``message.max.bytes`` to it (librdkafka's own default, 1,000,000, is lower). It fits the broker's default
``message.max.bytes`` (1048588: 1 MiB plus 12 bytes of log framing)."""

DEFAULT_SHARDS = 8
"""The shard count when OUTBOX_SHARDS is not set, for writers and relays alike (docs/decisions/014)."""


def _default_source() -> str:
    return f"urn:kafka-outbox:{socket.gethostname() or 'localhost'}"


@dataclass(frozen=True)
class Settings:
    """The validated settings of the write side. Build with :func:`configure` or from the environment."""

    schema: str = "outbox"
    shards: int = DEFAULT_SHARDS
    max_payload_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_key_bytes: int = 1024
    source: str = ""
    registry: SchemaRegistry | None = None

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", _default_source())
        _check_schema("OUTBOX_SCHEMA", self.schema)
        _check_int("OUTBOX_SHARDS", self.shards, 1, MAX_SHARDS)
        _check_int("OUTBOX_MAX_PAYLOAD_BYTES", self.max_payload_bytes, 1024, 2**31 - 1)
        _check_int("OUTBOX_MAX_KEY_BYTES", self.max_key_bytes, 1, 2048)
        _check_source(self.source)
        _check_registry(self.registry)


def _check_source(value: object) -> None:
    # Checked here, once, rather than failing every Event built with it as the default.
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ConfigError(f"OUTBOX_SOURCE must be a non-blank string without NUL, got {value!r}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"OUTBOX_SOURCE must be valid Unicode (it has a lone surrogate), got {value!r}") from None


def _check_registry(registry: object) -> None:
    if registry is None:
        return
    if isinstance(registry, type):  # its validate would be an unbound function, failing every enqueue
        raise ConfigError(
            f"registry must be an instance, got the class {registry.__name__}; "
            "e.g. registry=JsonSchemaRegistry({...})"
        )
    if not callable(getattr(registry, "validate", None)):
        raise ConfigError("registry must have a validate(type, data) method (see outbox.registry)")


def is_identifier(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a plain SQL identifier that Postgres keeps whole: the one rule for every schema, table
    and role-prefix name this package formats into SQL. ``[A-Za-z_][A-Za-z0-9_]*`` and nothing around it (``match``
    would take ``"outbox\\n"``: ``$`` matches before a final newline), at most ``MAX_IDENT`` characters (Postgres
    truncates a longer one silently)."""
    return isinstance(value, str) and len(value) <= MAX_IDENT and _IDENT.fullmatch(value) is not None


def _check_schema(var: str, value: object) -> None:
    if not is_identifier(value):
        raise ConfigError(
            f"{var} must be a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 chars), got {value!r}"
        )


def _check_int(var: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{var} must be an integer from {lo} to {hi}, got {value!r}")


_ENV: Mapping[str, tuple[str, type]] = {
    "OUTBOX_SCHEMA": ("schema", str),
    "OUTBOX_SHARDS": ("shards", int),
    "OUTBOX_MAX_PAYLOAD_BYTES": ("max_payload_bytes", int),
    "OUTBOX_MAX_KEY_BYTES": ("max_key_bytes", int),
    "OUTBOX_SOURCE": ("source", str),
}


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings read from ``environ`` (default ``os.environ``); unset variables keep their defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var, (name, kind) in _ENV.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        if kind is int:
            try:
                values[name] = int(raw.strip())
            except ValueError:
                raise ConfigError(f"{var} must be an integer, got {raw!r}") from None
        else:
            values[name] = raw.strip()
    return Settings(**values)


_lock = threading.Lock()
_current: Settings | None = None


def settings() -> Settings:
    """The process's settings (read from the environment on first use)."""
    global _current  # noqa: PLW0603 - one settings object per process, by design
    cur = _current
    if cur is None:
        with _lock:
            if _current is None:
                _current = from_env()
            cur = _current
    return cur


def configure(**overrides: Any) -> Settings:
    """Replace settings in code (on top of the environment); returns the new value.

    ``outbox.configure(schema="app_outbox", shards=16, registry=SchemaRegistry({...}))``. Unknown names raise
    :class:`ConfigError`. Call ``configure()`` with no arguments to re-read the environment.
    """
    global _current  # noqa: PLW0603
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    new = replace(from_env(), **overrides) if overrides else from_env()
    with _lock:
        _current = new
    return new
