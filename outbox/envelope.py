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

:func:`record_bytes` is the one place that counts a record's size the way Kafka does (record format v2, KIP-98):
the write-time size check (``outbox.validation``) and the relay's producer limit (``message.max.bytes``) rest on
it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
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


BATCH_OVERHEAD = 61
"""Bytes of a v2 record batch before its records: base offset 8, length 4, leader epoch 4, magic 1, CRC 4,
attributes 2, last offset delta 4, first and max timestamps 8 + 8, producer id 8, epoch 2, base sequence 4,
record count 4. The broker compares this plus the records with ``message.max.bytes`` (its default, 1048588, is
1 MiB plus the 12 bytes of offset and length)."""

WIDEST_BIGINT = 2**63 - 1
"""``outbox-id`` and ``outbox-key-seq`` are assigned by the database at insert, after the size check: they are
counted at the width of the largest bigint (19 digits), so the check never under-counts them."""


def varint_bytes(n: int) -> int:
    """Bytes of ``n`` as a Kafka varint (zigzag, 7 bits per byte): 1 for -1..63, 2 up to 8191, ..."""
    z = (n << 1) ^ (n >> 63)
    size = 1
    while z >= 0x80:
        z >>= 7
        size += 1
    return size


def header_bytes(name_len: int, value_len: int) -> int:
    """Bytes of one record header as Kafka frames it: name and value, each after its varint length."""
    return varint_bytes(name_len) + name_len + varint_bytes(value_len) + value_len


def record_bytes(key_len: int | None, value_len: int, headers: Iterable[tuple[int, int]]) -> int:
    """What Kafka counts for one record alone in its batch: the batch header plus the framed record.

    ``headers`` gives each header's (name, value) length in bytes. The record is its length (varint),
    attributes (1), timestamp and offset deltas (0 for the first record: 1 byte each), key and value with
    varint lengths (-1 for a null key), the header count, then each header's name and value with varint lengths.
    A record too large to share a batch is sent first in one of its own (librdkafka starts a new batch for it),
    so this is the size the producer's and the broker's ``message.max.bytes`` are compared with (uncompressed:
    librdkafka sends a batch uncompressed when compression does not make it smaller)."""
    body = 3 + (varint_bytes(-1) if key_len is None else varint_bytes(key_len) + key_len)
    body += varint_bytes(value_len) + value_len
    count = 0
    for name_len, v_len in headers:
        body += header_bytes(name_len, v_len)
        count += 1
    body += varint_bytes(count)
    return BATCH_OVERHEAD + varint_bytes(body) + body
