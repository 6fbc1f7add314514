"""Outbox rows → Kafka records: the wire contract of ``outbox.envelope`` applied to claimed rows.

Rows are not trusted. ``enqueue`` validates what it writes, but a row can also come from a hand-written INSERT,
an older writer or a bad migration, and one malformed row must never crash-loop its shard. :func:`to_record`
therefore checks every column it uses and raises :class:`~outbox.errors.PermanentPublishError` naming the row,
the column and what is wrong; the worker dead-letters such a row at once (no retry can change a stored row), and
its key is held like any other dead-lettered key. A ``time`` outside ``outbox.event.TIME_MIN``..``TIME_MAX``
(``infinity``, year 10000: values the database driver may not even convert) arrives here as None: the claim
selects it in a safe form (``outbox.store.relay``) so that one row cannot fail the claim of its whole shard.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from outbox.envelope import RESERVED_NAMES, RESERVED_PREFIXES, kafka_headers
from outbox.errors import PermanentPublishError, TopicError
from outbox.event import TIME_MAX, TIME_MIN, check_topic
from outbox.store.relay import PendingRow
from relay.ports import OutRecord

ERROR_CLASS = "UndecodableRow"
"""``dead_letter.error_class`` of a row no record can be built from (``outbox dlq list`` shows it)."""

# What a malformed column can raise while it is read; anything else is a bug and must surface as one.
_DECODE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, UnicodeError, OverflowError, RecursionError)


class _Bad(Exception):
    """One column of one row is unusable (internal: turned into PermanentPublishError by to_record)."""


def to_record(row: PendingRow) -> OutRecord:
    """The Kafka record of one row: key, payload as value, CloudEvents binary-mode headers.

    Raises PermanentPublishError when the row cannot be a record (see the module docstring)."""
    try:
        return _build(row)
    except _Bad as exc:
        raise PermanentPublishError(f"row {row.id} cannot be published: {exc}") from None
    except _DECODE_ERRORS as exc:  # a shape no check above foresaw: still this row's fault, not the shard's
        raise PermanentPublishError(f"row {row.id} cannot be published: {type(exc).__name__}: {exc}") from exc


def undecodable_reason(row: PendingRow) -> str | None:
    """Why ``row`` cannot be a record (``to_record``'s refusal), or None when it can."""
    try:
        to_record(row)
    except PermanentPublishError as exc:
        return str(exc)
    return None


def _build(row: PendingRow) -> OutRecord:
    try:
        check_topic(row.topic)
    except TopicError as exc:
        raise _Bad(str(exc)) from None
    if not isinstance(row.time, datetime) or row.time.tzinfo is None:
        raise _Bad(f"time is infinite or outside {TIME_MIN.isoformat()} .. {TIME_MAX.isoformat()} (the span every "
                   "client can read back); correct the row's time column and `outbox dlq retry` it")
    if not isinstance(row.payload, bytes):
        raise _Bad(f"payload is {type(row.payload).__name__}, not bytes")
    if row.key is not None and not isinstance(row.key, bytes):
        raise _Bad(f"key is {type(row.key).__name__}, not bytes")
    if (row.key is None) != (row.key_seq is None):
        raise _Bad("key and key_seq must both be set or both be null")
    for name in ("content_type", "type", "source"):
        v = getattr(row, name)
        if not isinstance(v, str) or not v:
            raise _Bad(f"{name} is {v!r}: a non-empty text is required")
    for name in ("subject", "traceparent"):
        v = getattr(row, name)
        if v is not None and not isinstance(v, str):
            raise _Bad(f"{name} is {type(v).__name__}, not text")
    headers = kafka_headers(
        event_id=row.event_id, source=row.source, type=row.type, time=row.time, content_type=row.content_type,
        outbox_id=row.id, key_seq=row.key_seq, subject=row.subject, traceparent=row.traceparent,
        user_headers=user_headers(row.headers),
    )
    return OutRecord(row.id, row.topic, row.key, row.payload, headers)


def user_headers(stored: Any) -> list[tuple[str, bytes]]:
    """The user headers of a row, from the ``event.headers`` column: JSON text as claimed (None when ``[]``), or
    already parsed. The writer's form (``outbox.event.headers_to_json``) is a list of ``{"name", "value"}``
    (text) or ``{"name", "base64"}`` (bytes) objects; anything else raises _Bad."""
    if stored is None:
        return []
    value = json.loads(stored) if isinstance(stored, str | bytes) else stored
    if not isinstance(value, list):
        raise _Bad(f"headers is a JSON {type(value).__name__}, not a list of {{name, value}} objects")
    out: list[tuple[str, bytes]] = []
    for i, h in enumerate(value):
        out.append(_header(i, h))
    return out


def _header(i: int, h: Any) -> tuple[str, bytes]:
    where = f"headers[{i}]"
    if not isinstance(h, dict):
        raise _Bad(f"{where} is {json.dumps(h)[:80]}, not a {{name, value}} object")
    name = h.get("name")
    if not isinstance(name, str) or not name:
        raise _Bad(f"{where} has no text 'name'")
    low = name.lower()
    if low in RESERVED_NAMES or low.startswith(RESERVED_PREFIXES):
        # The envelope already carries these; a second copy would make consumers read the wrong one.
        raise _Bad(f"{where} uses the reserved header name {name!r}")
    extra = set(h) - {"name", "value", "base64"}
    if extra or ("value" in h) == ("base64" in h):
        raise _Bad(f"{where} ({name!r}) must have exactly one of 'value' (text) or 'base64'")
    if "value" in h:
        if not isinstance(h["value"], str):
            raise _Bad(f"{where} ({name!r}) has a {type(h['value']).__name__} value, not text")
        return name, h["value"].encode()
    b64 = h["base64"]
    if not isinstance(b64, str):
        raise _Bad(f"{where} ({name!r}) has a {type(b64).__name__} base64 value, not text")
    try:
        return name, base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise _Bad(f"{where} ({name!r}) is not valid base64: {exc}") from None


def ordering_key(row: PendingRow) -> tuple[str, bytes] | None:
    """The (topic, key) whose order must be kept; None for null keys (no order to keep)."""
    return None if row.key is None else (row.topic, row.key)


def first_of_each_key(rows: Sequence[PendingRow]) -> list[int]:
    """Ids of the rows that come first of their key in ``rows`` (every null-key row): the rows a refusal of the
    whole of ``rows`` is charged to, since a key's later rows only waited behind its first."""
    seen: set[tuple[str, bytes]] = set()
    out: list[int] = []
    for r in rows:
        k = ordering_key(r)
        if k is None:
            out.append(r.id)
        elif k not in seen:
            seen.add(k)
            out.append(r.id)
    return out
