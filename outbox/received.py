"""The values of the consumer inbox: what a handler receives, what a batch did, how failures are retried."""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from outbox.extras import missing_extra

try:
    from tenacity import RetryCallState
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "outbox.inbox", "inbox") from exc

from outbox import envelope
from outbox.errors import ConfigError
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


_INT8_MIN, _INT8_MAX = -(2**63), 2**63 - 1
# Postgres stores timestamptz far beyond the years 1..9999 that Python (psycopg) can read back, in UTC or in any
# session time zone (offsets up to a day): a time outside this window would be stored and then break every reader.
_EARLIEST, _LATEST = datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)


def _int(v: str | None) -> int | None:
    # The columns are bigint: a value beyond it is as malformed as "abc", and storing it would fail the record's
    # transaction on every redelivery (a wedged group), so it becomes None like any other malformed header.
    try:
        n = int(v) if v is not None else None
    except ValueError:
        return None
    return n if n is not None and _INT8_MIN <= n <= _INT8_MAX else None


def _time(v: str | None) -> datetime | None:
    try:
        t = datetime.fromisoformat(v) if v else None
    except ValueError:
        return None
    if t is None:
        return None
    try:
        utc = (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-12:00 is in year 10000 in UTC
        return None
    return t if _EARLIEST <= utc <= _LATEST else None


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
        a = self.attempts
        if isinstance(a, bool) or not isinstance(a, int) or a < 1:
            raise ConfigError(f"invalid RetryPolicy: attempts must be an integer >= 1 (the first try counts), "
                              f"got {a!r}")
        for name in ("initial_wait", "max_wait"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"invalid RetryPolicy: {name} must be a finite number of seconds >= 0, got {v!r}")
        if self.max_wait < self.initial_wait:
            raise ConfigError(f"invalid RetryPolicy: max_wait ({self.max_wait!r}) must be >= initial_wait "
                              f"({self.initial_wait!r})")

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: exponential, capped, with full jitter in its upper half."""
        # The exponent is capped: 2 ** 2000 does not fit a float, and the wait is capped by max_wait long before.
        base = min(self.max_wait, self.initial_wait * 2.0 ** min(state.attempt_number - 1, 64))
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
