"""Outbox rows → Kafka records: the wire contract of ``outbox.envelope`` applied to claimed rows."""

from __future__ import annotations

from outbox.envelope import kafka_headers
from outbox.event import headers_from_json
from outbox.store.relay import PendingRow
from relay.ports import OutRecord


def to_record(row: PendingRow) -> OutRecord:
    """The Kafka record of one row: key, payload as value, CloudEvents binary-mode headers."""
    headers = kafka_headers(
        event_id=row.event_id, source=row.source, type=row.type, time=row.time, content_type=row.content_type,
        outbox_id=row.id, key_seq=row.key_seq, subject=row.subject, traceparent=row.traceparent,
        user_headers=headers_from_json(row.headers),
    )
    return OutRecord(row.id, row.topic, row.key, row.payload, headers)


def ordering_key(row: PendingRow) -> tuple[str, bytes] | None:
    """The (topic, key) whose order must be kept; None for null keys (no order to keep)."""
    return None if row.key is None else (row.topic, row.key)
