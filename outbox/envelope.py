"""CloudEvents 1.0 in Kafka *binary content mode*: attributes travel as ``ce_*`` headers, data as the value.

This is the wire contract between the relay (which writes it), the inbox and the reconciler (which read it),
and any consumer in any language. Header values are UTF-8 bytes.

=================== =====================================================================
header              value
=================== =====================================================================
ce_specversion      ``1.0``
ce_id               the event id (UUIDv7 by default), also the inbox dedupe key
ce_source           CloudEvents source (URI-reference)
ce_type             CloudEvents type, e.g. ``com.example.order.created``
ce_time             RFC 3339 UTC timestamp of the event
ce_subject          optional CloudEvents subject
content-type        the data's media type, e.g. ``application/json``
traceparent         optional W3C trace context of the writer
outbox-event-id     the event id again (stable name for non-CloudEvents tooling)
outbox-key-seq      the gap-free per-(topic, key) sequence, decimal; absent for null keys
outbox-id           the outbox row id (bigint, decimal): the reconciler's join key back to the table
=================== =====================================================================

User headers follow; names starting with ``ce_`` or ``outbox-`` (and ``content-type``, ``traceparent``) are
reserved and rejected at write time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

SPECVERSION = "1.0"
H_EVENT_ID = "outbox-event-id"
H_KEY_SEQ = "outbox-key-seq"
H_OUTBOX_ID = "outbox-id"
RESERVED_PREFIXES = ("ce_", "outbox-")
RESERVED_NAMES = frozenset({"content-type", "traceparent"})


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def kafka_headers(
    *,
    event_id: uuid.UUID,
    source: str,
    type: str,  # the CloudEvents attribute name
    time: datetime,
    content_type: str,
    outbox_id: int,
    key_seq: int | None,
    subject: str | None = None,
    traceparent: str | None = None,
    user_headers: Sequence[tuple[str, bytes]] = (),
) -> list[tuple[str, bytes]]:
    """The Kafka headers for one event, in a fixed order."""
    h: list[tuple[str, bytes]] = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", str(event_id).encode()),
        ("ce_source", source.encode()),
        ("ce_type", type.encode()),
        ("ce_time", format_time(time).encode()),
    ]
    if subject is not None:
        h.append(("ce_subject", subject.encode()))
    h.append(("content-type", content_type.encode()))
    if traceparent:
        h.append(("traceparent", traceparent.encode()))
    h.append((H_EVENT_ID, str(event_id).encode()))
    if key_seq is not None:
        h.append((H_KEY_SEQ, str(key_seq).encode()))
    h.append((H_OUTBOX_ID, str(outbox_id).encode()))
    h.extend(user_headers)
    return h


def header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    """The first value of header ``name``, or None."""
    for k, v in headers or ():
        if k == name:
            return v
    return None
