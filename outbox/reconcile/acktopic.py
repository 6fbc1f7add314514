"""Acknowledgements read from an ack topic, for auditors who cannot reach the consumers' databases.

The inbox can publish each acknowledgement to an ack topic (``Inbox(..., ack_topic=...)``). This loads that topic
into a *scratch* database the auditor controls (migrated like any inbox database), with the inbox's own rules:
deduplicated on (group, event id), a copy from another Kafka position recorded as a duplicate, each group's
subscribed topics registered. Each partition is read in offset order, and one key's acknowledgements share a
partition (the ack record key is group + topic + event key), so the scratch rows keep each key's processing
order and the order check holds. Then the scratch database is reconciled like a consumer database.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from outbox.errors import OutboxError, ReconcileError
from outbox.kafka_consumer import iter_acks
from outbox.store import inbox as store


def _time(v: Any) -> datetime | None:
    return datetime.fromisoformat(v) if isinstance(v, str) and v else None


def _ack(a: Mapping[str, Any]) -> store.Ack:
    return store.Ack(
        consumer_group=str(a["consumer_group"]), event_id=uuid.UUID(str(a["event_id"])), outbox_id=a.get("outbox_id"),
        topic=str(a["topic"]), partition=int(a["kafka_partition"]), offset=int(a["kafka_offset"]),
        key=bytes.fromhex(a["key"]) if a.get("key") is not None else None, key_seq=a.get("key_seq"),
        event_time=_time(a.get("event_time")), outcome=str(a.get("outcome", "processed")),
        processed_at=_time(a.get("processed_at")),
    )


def load(bootstrap: str, topic: str, scratch: sa.Engine, schema: str = "outbox", timeout: float = 300) -> int:
    """Load every acknowledgement of ``topic`` into ``scratch``; returns how many records were read."""
    read, registered = 0, set[tuple[str, str]]()
    try:
        for batch in iter_acks(bootstrap, topic, timeout=timeout):
            with scratch.begin() as conn:
                for a in batch:
                    ack = _ack(a)
                    new = [t for t in a.get("subscribed") or () if (ack.consumer_group, t) not in registered]
                    if new:
                        store.register_subscription(conn, ack.consumer_group, new, schema)
                        registered.update((ack.consumer_group, t) for t in new)
                    if store.acknowledge(conn, ack, schema) is None:
                        pos = store.acknowledged_position(conn, ack.consumer_group, ack.event_id, schema)
                        if pos is not None and pos != (ack.topic, ack.partition, ack.offset):
                            store.record_copy(conn, ack.consumer_group, ack.event_id,
                                              (ack.topic, ack.partition, ack.offset), schema)
            read += len(batch)
    except (OutboxError, KeyError, ValueError, TypeError) as exc:
        raise ReconcileError(f"could not load acknowledgements from {topic!r}: {exc}") from exc
    return read
