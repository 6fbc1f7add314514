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
from outbox.envelope import WIDEST_BIGINT, header_bytes, kafka_headers, record_bytes
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
    dup = _duplicate_key(data) if _coerces_keys(data) else None
    if dup is not None:
        raise PayloadError(dup)
    return encoded


_CONTAINERS = (dict, list, tuple)


def _coerces_keys(data: Any) -> bool:
    """Whether any object of ``data`` has a key that is not a str: the cheap pass (about one encode's time, no
    paths) that spares almost every payload the search of :func:`_duplicate_key`."""
    stack = [data]
    pop, extend = stack.pop, stack.extend
    while stack:
        value = pop()
        if isinstance(value, dict):
            for k in value:
                if type(k) is not str:
                    return True
            extend([v for v in value.values() if isinstance(v, _CONTAINERS)])
        elif isinstance(value, list | tuple):
            extend([v for v in value if isinstance(v, _CONTAINERS)])
    return False


def _json_key(k: Any) -> str:
    """The object key the JSON encoder writes for dict key ``k`` (it coerces int, float, bool and None)."""
    if isinstance(k, str):
        return k
    if k is True or k is False or k is None:
        return "true" if k is True else "false" if k is False else "null"
    return float.__repr__(k) if isinstance(k, float) else int.__repr__(k)


def _duplicate_key(data: Any) -> str | None:
    """The error text for an object of ``data`` whose keys collide once written as JSON, e.g. ``{1: .., "1": ..}``.

    Python keeps both keys, the encoder writes both, and JSON readers keep one of them (jsonb the last): half the
    data would vanish in the consumer. Only a str key and a coerced one can collide (int and float texts differ),
    so a dict whose keys are all str is skipped at once. Its own stack, like :func:`_find`: the data may be too
    deep to recurse into. Paths are built only for the error."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, steps = stack.pop()
        if isinstance(value, dict):
            if not all(type(k) is str for k in value):
                seen: dict[str, Any] = {}
                for k in value:
                    text = _json_key(k)
                    if text in seen:
                        path = "$" + "".join(steps)
                        return (f"data has two keys at {path} that are both written as the JSON key {text!r} "
                                f"({_key_text(seen[text], repr)} and {_key_text(k, repr)}); a JSON reader would "
                                "keep only one of them: rename one, or use keys of one type")
                    seen[text] = k
            stack.extend(reversed([(v, (*steps, f".{_key_text(k, str)}")) for k, v in value.items()
                                   if isinstance(v, _CONTAINERS)]))
        elif isinstance(value, list | tuple):
            stack.extend(reversed([(v, (*steps, f"[{i}]")) for i, v in enumerate(value)
                                   if isinstance(v, _CONTAINERS)]))
    return None


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


def _text_bytes(value: str | None) -> int:
    """UTF-8 length; ``isascii()`` is O(1), so only non-ASCII text is encoded to count it."""
    if value is None:
        return 0
    return len(value) if value.isascii() else len(value.encode())


def _user_header_sizes(event: Event) -> list[tuple[int, int]]:
    headers: Sequence[tuple[str, str | bytes]] = event.headers  # type: ignore[assignment]
    return [(_text_bytes(n), len(v) if isinstance(v, bytes) else _text_bytes(v)) for n, v in headers]


def _envelope_header_sizes(event: Event, key: bytes | None, traceparent: str | None) -> list[tuple[int, int]]:
    """The ce_*/outbox-* headers the relay will send, built by the relay's own function (row ids at their widest)."""
    built = kafka_headers(event_id=event.id, source=str(event.source), type=event.type, time=event.time,
                          content_type=str(event.content_type), outbox_id=WIDEST_BIGINT,
                          key_seq=None if key is None else WIDEST_BIGINT, subject=event.subject,
                          traceparent=traceparent)
    return [(len(n), len(v)) for n, v in built]  # the envelope's names are ASCII


def record_size(event: Event, payload: bytes, key: bytes | None, traceparent: str | None = None) -> int:
    """The size Kafka will count for this event's record, as the relay will send it (outbox.envelope)."""
    return record_bytes(None if key is None else len(key), len(payload),
                        _envelope_header_sizes(event, key, traceparent) + _user_header_sizes(event))


def _too_large(event: Event, payload: bytes, key: bytes | None, size: int, limit: int) -> PayloadError:
    framed = sum(header_bytes(n, v) for n, v in _user_header_sizes(event))
    parts = {"payload": len(payload), "key": len(key or b""), "headers": framed,
             "type": _text_bytes(event.type), "source": _text_bytes(event.source),
             "subject": _text_bytes(event.subject), "content_type": _text_bytes(event.content_type)}
    # the rest: the envelope's own headers, every varint length and Kafka's record and batch framing
    parts["envelope"] = size - sum(parts.values())
    largest = max(parts, key=lambda name: parts[name])
    advice = ("store large data elsewhere and send a reference" if largest in ("payload", "headers")
              else "send fewer or smaller headers" if largest == "envelope" else f"shorten {largest}")
    listed = ", ".join(f"{name} {n}" for name, n in parts.items() if n)
    return PayloadError(
        f"event {event.id} makes a Kafka record of {size} bytes ({listed}), over the maximum of {limit} "
        f"(OUTBOX_MAX_PAYLOAD_BYTES; the relay's producer and the broker's message.max.bytes must allow it too); "
        f"the largest part is {largest}: {advice}"
    )


def prepare_one(event: Event, s: Settings, traceparent: str | None = None) -> Prepared:
    """One event checked and encoded; ``traceparent`` is the one the relay will send with it (sized too)."""
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
    # Counted as Kafka counts the record the relay will send: every header with its framing, the CloudEvents
    # attributes among them; otherwise Kafka refuses it (MSG_SIZE_TOO_LARGE) long after the business commit.
    size = record_size(event, payload, key, traceparent)
    if size > s.max_payload_bytes:
        raise _too_large(event, payload, key, size, s.max_payload_bytes)
    return Prepared(
        event=event,
        key=key,
        payload=payload,
        headers=headers_to_json(headers),
        shard=shard_of(key, event.id, s.shards),
    )


def prepare(events: Iterable[Event], s: Settings, traceparent: str | None = None) -> list[Prepared]:
    """Check and encode every event; raises before returning if any one is bad."""
    prepared = [prepare_one(e, s, traceparent) for e in events]
    if len(prepared) < 2:
        return prepared
    ids = [p.event.id for p in prepared]
    if len(set(ids)) != len(ids):
        raise AttributeValueError("two events in one enqueue call share an id; event ids must be unique")
    return prepared
