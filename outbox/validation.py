"""Encode and check events before any SQL: the payload, its size, NULs, and the JSON-Schema registry.

:func:`prepare` turns :class:`~outbox.event.Event` values into :class:`Prepared` rows, or raises an
:class:`~outbox.errors.EventValidationError` subclass that says what to fix. Nothing is written until every event
of the call has passed, so a bad event never leaves half a batch behind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from outbox.config import Settings
from outbox.errors import AttributeValueError, EventValidationError, KeyError_, PayloadError
from outbox.event import Event, headers_to_json, shard_for


@dataclass(frozen=True)
class Prepared:
    """An event ready to insert: encoded payload and headers, the key as bytes, and its shard."""

    event: Event
    key: bytes | None
    payload: bytes
    headers: list[dict[str, str]]
    shard: int


# Built once: ``json.dumps`` with non-default options constructs a new encoder on every call.
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def encode_data(data: Any) -> bytes:
    """Compact UTF-8 JSON, refusing what JSON or jsonb consumers cannot take."""
    try:
        text = _ENCODER.encode(data)
    except TypeError as exc:
        raise PayloadError(
            f"data is not JSON-serialisable: {exc}; convert such values first (e.g. datetime.isoformat(), "
            "str(decimal), list(set)) or pass bytes with a non-JSON content_type"
        ) from exc
    except ValueError as exc:
        if "circular" in str(exc).lower():
            raise PayloadError("data contains a circular reference; JSON needs a tree") from exc
        path = _find(data, lambda v: isinstance(v, float) and not math.isfinite(v))
        raise PayloadError(
            f"data contains NaN or Infinity at {path}, which JSON cannot represent; use null or a string"
        ) from exc
    try:
        encoded = text.encode()
    except UnicodeEncodeError as exc:
        raise PayloadError(f"data contains a string that is not valid Unicode ({exc.reason}); fix it") from exc
    # json.dumps escapes NUL as \u0000, so this cheap test has no false negatives; _find confirms and locates.
    if b"\\u0000" in encoded:
        path = _find(data, lambda v: isinstance(v, str) and "\x00" in v, keys=True)
        if path is not None:
            raise PayloadError(
                f"data contains a NUL character (\\u0000) at {path}; Postgres jsonb and many consumers "
                "reject it, so remove it or send the data as bytes"
            )
    return encoded


def _find(data: Any, bad: Any, *, keys: bool = False, path: str = "$") -> str | None:
    """The JSON path of the first value for which ``bad`` holds (dict keys too when ``keys``), or None."""
    if bad(data):
        return path
    if isinstance(data, dict):
        for k, v in data.items():
            if keys and bad(k):
                return f"{path} (key {k!r})"
            found = _find(v, bad, keys=keys, path=f"{path}.{k}")
            if found:
                return found
    elif isinstance(data, list | tuple):
        for i, v in enumerate(data):
            found = _find(v, bad, keys=keys, path=f"{path}[{i}]")
            if found:
                return found
    return None


def _header_bytes(headers: Sequence[tuple[str, str | bytes]]) -> int:
    if not headers:
        return 0
    return sum(len(n.encode()) + len(v.encode() if isinstance(v, str) else v) for n, v in headers)


def prepare_one(event: Event, s: Settings) -> Prepared:
    if not isinstance(event, Event):
        raise EventValidationError(f"enqueue takes outbox.Event values, got {type(event).__name__}")
    key = event.key_bytes
    if key is not None and len(key) > s.max_key_bytes:
        raise KeyError_(
            f"key is {len(key)} bytes, over the maximum of {s.max_key_bytes} (OUTBOX_MAX_KEY_BYTES); "
            "use a shorter key such as an id or a hash"
        )
    if isinstance(event.data, bytes):
        payload = event.data
    else:
        payload = encode_data(event.data)
        if s.registry is not None:
            s.registry.validate(event.type, event.data)
    headers: Sequence[tuple[str, str | bytes]] = event.headers  # type: ignore[assignment]
    size = len(payload) + len(key or b"") + _header_bytes(headers)
    if size > s.max_payload_bytes:
        raise PayloadError(
            f"event {event.id} is {size} bytes (payload {len(payload)}, key {len(key or b'')}, headers "
            f"{size - len(payload) - len(key or b'')}), over the maximum of {s.max_payload_bytes} "
            "(OUTBOX_MAX_PAYLOAD_BYTES, matching Kafka's message.max.bytes); store large data elsewhere "
            "and send a reference"
        )
    return Prepared(
        event=event,
        key=key,
        payload=payload,
        headers=headers_to_json(headers),
        shard=shard_for(event.topic, key, event.id, s.shards),
    )


def prepare(events: Iterable[Event], s: Settings) -> list[Prepared]:
    """Check and encode every event; raises before returning if any one is bad."""
    prepared = [prepare_one(e, s) for e in events]
    if len(prepared) < 2:
        return prepared
    ids = [p.event.id for p in prepared]
    if len(set(ids)) != len(ids):
        raise AttributeValueError("two events in one enqueue call share an id; event ids must be unique")
    return prepared
