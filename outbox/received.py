"""The values of the consumer inbox: what a handler receives, what a batch did, how failures are retried."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from tenacity import RetryCallState

from outbox import envelope
from outbox.kafka_consumer import KafkaRecord, Position


class Outcome(Enum):
    """What happened to one record."""

    PROCESSED = "processed"          # handler ran and committed with the acknowledgement
    DUPLICATE = "duplicate"          # already acknowledged by this group: skipped
    DEAD_LETTERED = "dead_lettered"  # handler kept failing: recorded with the error, skipped


@dataclass(frozen=True)
class ReceivedEvent:
    """One event as the handler sees it (CloudEvents attributes from the ``ce_*`` headers)."""

    event_id: uuid.UUID
    topic: str
    partition: int
    offset: int
    key: bytes | None
    key_seq: int | None
    outbox_id: int | None
    type: str | None
    source: str | None
    subject: str | None
    time: datetime | None
    content_type: str | None
    data: bytes
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_record(cls, rec: KafkaRecord) -> ReceivedEvent:
        def text(name: str) -> str | None:
            v = envelope.header(rec.headers, name)
            return None if v is None else v.decode("utf-8", "replace")

        raw_id = text(envelope.H_EVENT_ID) or text("ce_id")
        try:
            event_id = uuid.UUID(raw_id) if raw_id else _position_id(rec)
        except ValueError:
            event_id = _position_id(rec)
        t = text("ce_time")
        return cls(
            event_id=event_id, topic=rec.topic, partition=rec.partition, offset=rec.offset, key=rec.key,
            key_seq=_int(text(envelope.H_KEY_SEQ)), outbox_id=_int(text(envelope.H_OUTBOX_ID)),
            type=text("ce_type"), source=text("ce_source"), subject=text("ce_subject"),
            time=_time(t), content_type=text("content-type"), data=rec.value or b"", headers=rec.headers,
        )

    def json(self) -> Any:
        """The data decoded as JSON."""
        return json.loads(self.data)


def _position_id(rec: KafkaRecord) -> uuid.UUID:
    # A record without an event id (not written by an outbox) is deduplicated by its position instead.
    return uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{rec.topic}/{rec.partition}/{rec.offset}")


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _time(v: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(v) if v else None
    except ValueError:
        return None


Handler = Callable[[sa.Connection, ReceivedEvent], None]


def session_handler(fn: Callable[[Session, ReceivedEvent], None]) -> Handler:
    """Adapt an ORM handler: it gets a Session joined to the inbox transaction.

    The session works inside a SAVEPOINT of the inbox's transaction; its ``commit()`` (done here after the handler)
    only releases the savepoint, so the handler's writes commit, or roll back, with the acknowledgement.
    """

    def run(conn: sa.Connection, ev: ReceivedEvent) -> None:
        with Session(bind=conn, join_transaction_mode="create_savepoint") as s:
            fn(s, ev)
            s.commit()

    return run


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts of a failing handler before the event is dead-lettered; waits grow exponentially (seconds)."""

    attempts: int = 3
    initial_wait: float = 0.05
    max_wait: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_wait < 0 or self.max_wait < self.initial_wait:
            raise ValueError(f"invalid RetryPolicy {self}")

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: exponential, capped, with full jitter in its upper half."""
        base = min(self.max_wait, self.initial_wait * 2 ** (state.attempt_number - 1))
        return float(base * random.uniform(0.5, 1.0))


@dataclass(frozen=True)
class BatchResult:
    """What one :meth:`Inbox.run_once` did."""

    received: int = 0
    processed: int = 0
    duplicates: int = 0
    copies: int = 0  # duplicates read from another Kafka position: the event was published twice
    dead_lettered: int = 0
    committed: Mapping[Position, int] = field(default_factory=dict)

    @property
    def moved(self) -> bool:
        return self.received > 0
