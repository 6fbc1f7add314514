"""The event value type, what ``enqueue`` returns, and the key → shard function shared with the relay.

An :class:`Event` checks its own attributes when it is built (topic, type, source, key, headers, id, time,
content type), so a bad event fails where it is written in the code. The payload is encoded and checked against
size limits and the optional JSON-Schema registry by :func:`outbox.validation.prepare`, still before any SQL.
"""

from __future__ import annotations

import base64
import re
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from uuid_utils.compat import uuid7

from outbox import config
from outbox.envelope import RESERVED_NAMES, RESERVED_PREFIXES
from outbox.errors import AttributeValueError, ConfigError, HeaderError, KeyError_, PayloadError, TopicError
from outbox.keyhash import kafka_partition

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
# Kafka's own rule (Topic.validate): legal characters, at most 249, not "." or "..". 249 is the real maximum: a
# partition's directory is "<topic>-<partition>", and 249 leaves room for "-" and five digits in a 255-byte file
# name (Kafka 4.3.1 creates, serves and deletes a 249-character topic with 10 partitions: tests/integration/write/
# test_kafka_limits.py). Used with fullmatch: ``$`` would also match before a trailing newline ("orders\n").
TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]{1,249}")
TIME_MIN = datetime(1, 1, 2, tzinfo=UTC)
TIME_MAX = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
"""The span of an event's ``time`` (both ends included), the one owner of it: ``enqueue`` refuses times outside it,
the ``event`` table's CHECK (migration relay_0003, ``outbox.schema``) refuses them when written, and the relay's
claim reads only times within it. Python's datetime spans years 1..9999, and a driver converts a stored time into
its session's time zone (offsets under a day), so a day's margin at each end keeps every stored time readable by
every client."""
INTERNAL_TOPIC_PREFIX = "__"
"""Kafka's own topics (``__consumer_offsets``, ``__transaction_state``, ``__share_group_state``,
``__cluster_metadata``, ...): never a destination for events."""

HeaderValue = str | bytes
HeadersArg = Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]]


def shard_for(topic: str, key: str | bytes | None, event_id: uuid.UUID, shards: int) -> int:
    """The shard of an event: stable across processes, versions and languages.

    A keyed event's shard is the partition Kafka's default partitioner would pick for its key among ``shards``
    partitions (murmur2, :mod:`outbox.keyhash`): one key always lands on one shard (one publisher, in order), and
    a shard's keys fall into few partitions of each topic, one when the topic has a multiple of ``shards``
    partitions. ``topic`` plays no part since 2026-12-01 (it was hashed with the key before: docs/decisions/016).
    Null-keyed events have no order to keep and spread by their id (CRC-32). A ``str`` key is UTF-8 encoded, as
    :class:`Event` encodes it. Bad arguments raise the :class:`~outbox.errors.EventValidationError` naming them.
    """
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a str, got {type(topic).__name__}")
    if isinstance(key, str):
        key = _encode_key(key)
    elif key is not None and not isinstance(key, bytes):
        raise KeyError_(f"key must be str, bytes or None, got {type(key).__name__}")
    if not isinstance(event_id, uuid.UUID):
        raise AttributeValueError(f"event_id must be a uuid.UUID, got {type(event_id).__name__}")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be a positive int (OUTBOX_SHARDS), got {shards!r}")
    return shard_of(key, event_id, shards)


def shard_of(key: bytes | None, event_id: uuid.UUID, shards: int) -> int:
    """:func:`shard_for` without the argument checks, for callers whose arguments are already valid."""
    if key is None:
        return zlib.crc32(event_id.bytes) % shards
    return kafka_partition(key, shards)


def _encode_key(key: str) -> bytes:
    try:
        return key.encode()
    except UnicodeEncodeError as exc:
        raise KeyError_(f"key {key!r} cannot be UTF-8 encoded ({exc.reason}); pass bytes") from exc


def is_json_content_type(content_type: str) -> bool:
    """``application/json`` or any ``+json`` suffix type (parameters such as charset ignored)."""
    if content_type == JSON:  # the default: skip the parsing below
        return True
    base = content_type.split(";", 1)[0].strip().lower()
    return base == JSON or base.endswith("+json")


def check_topic(topic: object) -> str:
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a str, got {type(topic).__name__}")
    if topic in (".", ".."):
        raise TopicError(f"topic {topic!r} is not allowed by Kafka; pick a name such as 'orders'")
    if not TOPIC_RE.fullmatch(topic):
        if not topic:
            raise TopicError("topic is empty; give the Kafka topic name, e.g. 'orders'")
        if len(topic) > 249:
            raise TopicError(f"topic is {len(topic)} characters long; Kafka allows at most 249")
        bad = sorted({c for c in topic if not re.match(r"[a-zA-Z0-9._-]", c)})
        raise TopicError(f"topic {topic!r} has characters Kafka rejects {bad}; use only [a-zA-Z0-9._-]")
    return topic


def check_writable_topic(topic: object) -> str:
    """:func:`check_topic`, and not one of Kafka's internal topics: what an event may be written to.

    The broker refuses to append to them only at publish time (TOPIC_AUTHORIZATION_FAILED when the transaction
    adds the partition), long after the business transaction committed; a name of ours that merely starts with
    ``__`` may become Kafka's tomorrow."""
    name = check_topic(topic)
    if name.startswith(INTERNAL_TOPIC_PREFIX):
        raise TopicError(
            f"topic {name!r} starts with {INTERNAL_TOPIC_PREFIX!r}, the prefix of Kafka's internal topics "
            "(__consumer_offsets, __transaction_state, ...), which clients may not write to; pick another name"
        )
    return name


def _check_text(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise AttributeValueError(f"{name} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise AttributeValueError(f"{name} is empty; give a non-blank value")
    if "\x00" in value:
        raise AttributeValueError(f"{name} contains a NUL character (\\u0000), which Postgres text rejects")
    if not value.isascii() and not utf8_encodable(value):  # isascii() is O(1): the common case stops there
        raise AttributeValueError(f"{name} {_head(value)} is not valid Unicode (a lone surrogate); fix the text")


def utf8_encodable(value: str) -> bool:
    """False for text Postgres and Kafka cannot take: a lone surrogate has no UTF-8 form."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _head(value: str) -> str:
    """``value`` quoted for a message, cut short: the offending text may be megabytes long."""
    return repr(value) if len(value) <= 60 else f"{value[:60]!r}... ({len(value)} characters)"


def _check_time(t: object) -> None:
    if not isinstance(t, datetime):
        raise AttributeValueError(f"time must be a datetime, got {type(t).__name__}")
    if t.tzinfo is None:
        raise AttributeValueError("time is a naive datetime; pass an aware one, e.g. datetime.now(UTC)")
    try:
        # datetime checks what the tzinfo returns: a timedelta within ±24 h, or None
        offset = t.utcoffset()
    except Exception as exc:
        raise AttributeValueError(
            f"time's tzinfo {t.tzinfo!r} gives no usable UTC offset ({type(exc).__name__}: {exc}); use "
            "datetime.timezone or zoneinfo"
        ) from exc
    if offset is None:
        raise AttributeValueError("time is a naive datetime; pass an aware one, e.g. datetime.now(UTC)")
    # Only a time in year 1 or 9999 can fall outside TIME_MIN..TIME_MAX. Postgres would store one (even year
    # 10000, or 1 BC), but no Python client could read it back into its session's time zone.
    if t.year in (1, 9999):
        try:
            inside = TIME_MIN <= t.astimezone(UTC) <= TIME_MAX
        except OverflowError:
            inside = False
        if not inside:
            raise AttributeValueError(
                f"time {t.isoformat()} is outside {TIME_MIN.isoformat()} .. {TIME_MAX.isoformat()}, the span every "
                "client (the relay among them) can read back; give a time within it"
            )


def _normalise_headers(headers: object) -> tuple[tuple[str, HeaderValue], ...]:
    if headers is None or (type(headers) is tuple and not headers):  # the default, without the ABC checks
        return ()
    if isinstance(headers, Mapping):
        items: list[Any] = list(headers.items())
    elif isinstance(headers, str | bytes) or not isinstance(headers, Sequence):
        raise HeaderError(
            f"headers must be a mapping or a sequence of (name, value) pairs, got {type(headers).__name__}"
        )
    else:
        items = list(headers)
    out: list[tuple[str, HeaderValue]] = []
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise HeaderError(f"each header must be a (name, value) pair, got {item!r}")
        name, value = item
        if not isinstance(name, str) or not name:
            raise HeaderError(f"header name must be a non-empty str, got {name!r}")
        if "\x00" in name:
            raise HeaderError(f"header name {name!r} contains a NUL character")
        if not name.isascii() and not utf8_encodable(name):
            raise HeaderError(f"header name {_head(name)} is not valid Unicode (a lone surrogate); fix it")
        low = name.lower()
        if low in RESERVED_NAMES or low.startswith(RESERVED_PREFIXES):
            raise HeaderError(
                f"header name {name!r} is reserved for the CloudEvents envelope "
                f"(names starting {'/'.join(RESERVED_PREFIXES)} and {sorted(RESERVED_NAMES)}); rename it"
            )
        if isinstance(value, str):
            if "\x00" in value:
                raise HeaderError(f"header {name!r}: a str value cannot contain NUL; pass bytes instead")
            if not value.isascii() and not utf8_encodable(value):
                raise HeaderError(f"header {name!r}: the value is not valid Unicode (a lone surrogate); fix it or "
                                  "pass bytes")
        elif not isinstance(value, bytes):
            raise HeaderError(f"header {name!r}: value must be str or bytes, got {type(value).__name__}")
        out.append((name, value))
    return tuple(out)


@dataclass(frozen=True)
class Event:
    """One CloudEvents 1.0 event to publish to ``topic``.

    ``data`` is JSON-able (encoded as compact UTF-8 JSON) or ``bytes`` (sent as is, with a non-JSON
    ``content_type``). A ``str`` key is UTF-8 encoded; ``None`` means no key (no ordering, spread over shards).
    ``source`` defaults to the configured source; ``id`` to a fresh UUIDv7; ``time`` to now (UTC).
    """

    topic: str
    type: str
    data: Any = None
    key: str | bytes | None = None
    source: str | None = None
    subject: str | None = None
    headers: HeadersArg = ()
    id: uuid.UUID = field(default_factory=uuid7)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    content_type: str | None = None

    def __post_init__(self) -> None:
        check_writable_topic(self.topic)
        _check_text("type", self.type)
        if self.source is None:
            object.__setattr__(self, "source", config.settings().source)
        _check_text("source", self.source)
        _check_text("subject", self.subject, optional=True)
        if self.key is not None and not isinstance(self.key, str | bytes):
            raise KeyError_(f"key must be str, bytes or None, got {type(self.key).__name__}; convert it, e.g. str(id)")
        if isinstance(self.key, str):
            _encode_key(self.key)
        if not isinstance(self.id, uuid.UUID):
            raise AttributeValueError(f"id must be a uuid.UUID, got {type(self.id).__name__}; use uuid.UUID(text)")
        _check_time(self.time)
        object.__setattr__(self, "headers", _normalise_headers(self.headers))
        if self.content_type is None:
            object.__setattr__(self, "content_type", OCTET_STREAM if isinstance(self.data, bytes) else JSON)
        _check_text("content_type", self.content_type)
        json_type = is_json_content_type(str(self.content_type))
        if isinstance(self.data, bytes) and json_type:
            raise PayloadError(
                f"data is bytes but content_type is {self.content_type!r}: pass the decoded object as data "
                "(it is JSON-encoded for you), or give a non-JSON content_type"
            )
        if not isinstance(self.data, bytes) and not json_type:
            raise PayloadError(
                f"content_type {self.content_type!r} needs bytes data; non-bytes data is JSON-encoded, "
                "so use a JSON content type or encode the data yourself"
            )

    @property
    def key_bytes(self) -> bytes | None:
        """The key as sent to Kafka (str keys are UTF-8 encoded)."""
        return self.key.encode() if isinstance(self.key, str) else self.key


@dataclass(frozen=True)
class StoredEvent:
    """What :func:`outbox.enqueue` wrote: the outbox row id, the event id and its ordering coordinates."""

    id: int
    event_id: uuid.UUID
    topic: str
    key: bytes | None
    key_seq: int | None
    shard: int


def headers_to_json(headers: Sequence[tuple[str, HeaderValue]]) -> list[dict[str, str]]:
    """The ``event.headers`` jsonb form: ``{"name", "value"}`` for str values, ``{"name", "base64"}`` for bytes.

    Readable in psql for the common (text) case and lossless for bytes; :func:`headers_from_json` reverses it.
    """
    return [
        {"name": n, "value": v} if isinstance(v, str) else {"name": n, "base64": base64.b64encode(v).decode()}
        for n, v in headers
    ]


def headers_from_json(value: Sequence[Mapping[str, str]] | None) -> list[tuple[str, bytes]]:
    """Kafka headers (UTF-8 bytes values) from the ``event.headers`` jsonb column, in their original order."""
    out: list[tuple[str, bytes]] = []
    for h in value or ():
        if "base64" in h:
            out.append((h["name"], base64.b64decode(h["base64"])))
        else:
            out.append((h["name"], h["value"].encode()))
    return out
