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
from outbox.event import Event, headers_to_json, shard_of


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

# What the relay adds to every record beyond the event's own fields, so that the size check here is the one Kafka
# makes: the fixed ce_*/outbox-* header names and values (spec version, the id twice, the time, a traceparent,
# two decimal numbers: ~310 bytes) and Kafka's record and batch framing (~100 bytes), rounded up.
ENVELOPE_BYTES = 512


def encode_data(data: Any) -> bytes:
    """Compact UTF-8 JSON, refusing what JSON or jsonb consumers cannot take."""
    try:
        text = _ENCODER.encode(data)
    except TypeError as exc:
        raise PayloadError(
            f"data is not JSON-serialisable: {exc}; convert such values first (e.g. datetime.isoformat(), "
            "str(decimal), list(set)) or pass bytes with a non-JSON content_type"
        ) from exc
    except RecursionError as exc:
        raise PayloadError(
            "data is nested too deeply to encode (Python's recursion limit); flatten it or send it as bytes"
        ) from exc
    except ValueError as exc:
        raise _unencodable(data, exc) from exc
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


def _unencodable(data: Any, exc: ValueError) -> PayloadError:
    """The error for a ValueError of the JSON encoder, found again in ``data`` to name its path."""
    if "circular" in str(exc).lower():
        return PayloadError("data contains a circular reference; JSON needs a tree")
    path = _find(data, lambda v: isinstance(v, float) and not math.isfinite(v), keys=True)
    if path is not None:
        return PayloadError(
            f"data contains NaN or Infinity at {path}, which JSON cannot represent; use null or a string"
        )
    path = _find(data, _int_too_long, keys=True)
    if path is not None:
        return PayloadError(
            f"data contains an integer at {path} with more digits than Python converts to text "
            "(sys.get_int_max_str_digits()); send it as a string"
        )
    return PayloadError(f"data cannot be encoded as JSON: {exc}")


def _int_too_long(v: Any) -> bool:
    if not isinstance(v, int):
        return False
    try:
        str(v)
    except ValueError:
        return True
    return False


def _find(data: Any, bad: Any, *, keys: bool = False) -> str | None:
    """The JSON path of the first value for which ``bad`` holds (dict keys too when ``keys``), or None.

    Depth-first in document order, with its own stack: data deep enough to reach here may be too deep to
    recurse into (the encoder's limit is shared with this frame's callers)."""
    # (value, path, found): ``found`` marks a dict key already known to be bad, kept in document order
    stack: list[tuple[Any, str, bool]] = [(data, "$", False)]
    while stack:
        value, path, found = stack.pop()
        if found or bad(value):
            return path
        if isinstance(value, dict):
            children: list[tuple[Any, str, bool]] = []
            for k, v in value.items():
                if keys and bad(k):
                    children.append((k, f"{path} (key {_key_text(k, repr)})", True))
                children.append((v, f"{path}.{_key_text(k, str)}", False))
            stack.extend(reversed(children))
        elif isinstance(value, list | tuple):
            stack.extend(reversed([(v, f"{path}[{i}]", False) for i, v in enumerate(value)]))
    return None


def _key_text(k: Any, show: Any) -> str:
    """``show(k)`` (str or repr), or the size of an int too long for either to convert."""
    try:
        return str(show(k))
    except ValueError:
        return f"<an integer of {k.bit_length()} bits>"


def _header_bytes(headers: Sequence[tuple[str, str | bytes]]) -> int:
    if not headers:
        return 0
    return sum(len(n.encode()) + len(v.encode() if isinstance(v, str) else v) for n, v in headers)


def _text_bytes(value: str | None) -> int:
    """UTF-8 length; ``isascii()`` is O(1), so only non-ASCII text is encoded to count it."""
    if value is None:
        return 0
    return len(value) if value.isascii() else len(value.encode())


def _too_large(event: Event, payload: bytes, key: bytes | None, limit: int) -> PayloadError:
    headers: Sequence[tuple[str, str | bytes]] = event.headers  # type: ignore[assignment]
    parts = {"payload": len(payload), "key": len(key or b""), "headers": _header_bytes(headers),
             "type": _text_bytes(event.type), "source": _text_bytes(event.source),
             "subject": _text_bytes(event.subject), "content_type": _text_bytes(event.content_type),
             "envelope": ENVELOPE_BYTES}
    size = sum(parts.values())
    largest = max(parts, key=lambda name: parts[name])
    advice = ("store large data elsewhere and send a reference" if largest in ("payload", "headers")
              else f"shorten {largest}")
    listed = ", ".join(f"{name} {n}" for name, n in parts.items() if n)
    return PayloadError(
        f"event {event.id} is {size} bytes ({listed}), over the maximum of {limit} (OUTBOX_MAX_PAYLOAD_BYTES, "
        f"matching Kafka's message.max.bytes); the largest part is {largest}: {advice}"
    )


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
            try:
                s.registry.validate(event.type, event.data)
            except RecursionError as exc:  # the validator recurses deeper per level than the encoder
                raise PayloadError(
                    f"data is nested too deeply to check against the JSON Schema of {event.type!r} (Python's "
                    "recursion limit); flatten it"
                ) from exc
    headers: Sequence[tuple[str, str | bytes]] = event.headers  # type: ignore[assignment]
    # The CloudEvents attributes travel as headers of the same record, so they count too (the relay would
    # otherwise dead-letter an event with a 2 MB type long after the business transaction committed).
    attrs = (_text_bytes(event.type) + _text_bytes(event.source) + _text_bytes(event.subject)
             + _text_bytes(event.content_type))
    size = len(payload) + len(key or b"") + _header_bytes(headers) + attrs + ENVELOPE_BYTES
    if size > s.max_payload_bytes:
        raise _too_large(event, payload, key, s.max_payload_bytes)
    return Prepared(
        event=event,
        key=key,
        payload=payload,
        headers=headers_to_json(headers),
        shard=shard_of(key, event.id, s.shards),
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
