"""Assertions for your own tests: what did my code enqueue? No broker, no relay needed.

::

    def test_checkout(session):
        checkout(session, cart)
        outbox.testing.assert_enqueued(session, type="order.created", key=str(cart.order_id), count=1)

The helpers read the pending (not yet published) rows through your session or connection, so they see
uncommitted events of the test's own transaction. With an ``AsyncSession``, call them through ``run_sync``:
``await session.run_sync(lambda s: assert_enqueued(s, type="order.created"))``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from outbox.config import settings
from outbox.errors import AttributeValueError, KeyError_, OutboxError, SessionStateError, TopicError
from outbox.event import headers_from_json, is_json_content_type, utf8_encodable
from outbox.store.write import select_pending


class Any_(Enum):
    ANY = "any"


ANY = Any_.ANY


@dataclass(frozen=True)
class PendingEvent:
    """One pending outbox row, as a value."""

    id: int
    event_id: uuid.UUID
    topic: str
    key: bytes | None
    key_seq: int | None
    shard: int
    type: str
    source: str
    subject: str | None
    time: datetime
    content_type: str
    payload: bytes
    headers: list[tuple[str, bytes]]
    traceparent: str | None

    @property
    def data(self) -> Any:
        """The payload decoded from JSON (or the raw bytes for non-JSON content types)."""
        return json.loads(self.payload) if is_json_content_type(self.content_type) else self.payload


def pending_events(
    target: Session | sa.Connection,
    *,
    topic: str | None = None,
    type: str | None = None,
    key: str | bytes | Literal[Any_.ANY] | None = ANY,
) -> list[PendingEvent]:
    """Pending events visible to ``target``, in id order, optionally filtered (``key=None`` means null keys).

    A session is flushed first, so auto-events of unflushed changes are included. Bad arguments raise an
    :class:`~outbox.errors.OutboxError` before any SQL, so they never abort the test's transaction.
    """
    _check_target(target)
    kf = _key_filter(key)
    _check_text("topic", topic, TopicError)
    _check_text("type", type, AttributeValueError)
    if not target.in_transaction():
        # Read in a short transaction of our own rather than leave one begun behind the caller's back.
        with target.begin():
            return pending_events(target, topic=topic, type=type, key=key)
    if isinstance(target, Session):
        target.flush()
        conn = target.connection()
    else:
        conn = target
    rows = select_pending(conn, schema=settings().schema, topic=topic, type_=type, key=kf)
    return [
        PendingEvent(
            id=r.id, event_id=r.event_id, topic=r.topic, key=None if r.key is None else bytes(r.key),
            key_seq=r.key_seq, shard=r.shard, type=r.type, source=r.source, subject=r.subject, time=r.time,
            content_type=r.content_type, payload=bytes(r.payload), headers=headers_from_json(r.headers),
            traceparent=r.traceparent,
        )
        for r in rows
    ]


def _check_target(target: object) -> None:
    if isinstance(target, AsyncSession | AsyncConnection):
        raise SessionStateError(
            f"outbox.testing reads through a sync Session or Connection; with an {type(target).__name__} call it "
            "through run_sync, e.g. await session.run_sync(lambda s: assert_enqueued(s, ...))"
        )
    if not isinstance(target, Session | sa.Connection):
        raise SessionStateError(
            f"outbox.testing needs a SQLAlchemy Session or Connection (the test's own transaction), got "
            f"{type(target).__name__}; for an Engine, use engine.connect()"
        )


def _key_filter(key: object) -> bytes | bool | None:
    """The key as ``select_pending`` takes it: ``True`` for any key, ``None`` for null keys, else the bytes."""
    if key is ANY:
        return True
    if key is None or isinstance(key, bytes):
        return key
    if not isinstance(key, str):
        raise KeyError_(f"the key filter must be str, bytes, None (null keys) or testing.ANY, got {key!r}")
    try:
        return key.encode()
    except UnicodeEncodeError as exc:
        raise KeyError_(f"the key filter {key!r} is not valid Unicode (a lone surrogate); no key can match it") from exc


def _check_text(name: str, value: object, error: type[OutboxError]) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise error(f"the {name} filter must be a str or None, got {value!r}")
    if "\x00" in value or not utf8_encodable(value):
        raise error(f"the {name} filter {value!r} contains NUL or a lone surrogate; no stored {name} can match it")


def assert_enqueued(
    target: Session | sa.Connection,
    *,
    type: str | None = None,
    topic: str | None = None,
    key: str | bytes | Literal[Any_.ANY] | None = ANY,
    data: Any = ANY,
    count: int | None = None,
) -> list[PendingEvent]:
    """Assert pending events match; ``count=None`` means at least one. Returns the matches.

    The failure message lists what *was* enqueued, so a wrong type or key is obvious.
    """
    matches = pending_events(target, topic=topic, type=type, key=key)
    if data is not ANY:
        matches = [m for m in matches if m.data == data]
    ok = len(matches) >= 1 if count is None else len(matches) == count
    if not ok:
        seen = [(e.topic, e.type, e.key, e.key_seq) for e in pending_events(target)]
        want = "at least 1" if count is None else str(count)
        crit = {k: v for k, v in {"type": type, "topic": topic, "key": key, "data": data}.items()
                if v is not None and v is not ANY}
        raise AssertionError(
            f"expected {want} pending event(s) matching {crit}, found {len(matches)}; "
            f"pending (topic, type, key, key_seq): {seen}"
        )
    return matches
