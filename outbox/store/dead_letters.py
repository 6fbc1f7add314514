"""The operators' dead-letter SQL (``outbox dlq list|show|retry|discard``).

Every function takes the caller's :class:`~sqlalchemy.engine.Connection` (with the schema translate map already
applied) and never commits (see :mod:`outbox.store.ops`). Semantics (docs/decisions/030-replay-and-dlq.md):

* **dlq retry** clears ``dead_at`` and ``attempts`` of the row and resolves its dead letter (``retried``); the
  key's later rows were held (still pending, larger ids), so the retried row goes first again. Like a replay, it
  re-queues the row into its key's shard under the shard count in use *now* (``shards``).
* **dlq discard** resolves the dead letter (``discarded``); the row stays dead, and the key is released.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa

from outbox.schema import dead_letter, event
from outbox.store import translate_errors
from outbox.store.ops import current_shard, note_requeued


class Resolution(Enum):
    RETRIED = "retried"
    DISCARDED = "discarded"


class ResolveOutcome(Enum):
    """Result of ``dlq retry`` / ``dlq discard`` for one dead letter."""

    DONE = "done"
    NOT_FOUND = "not found"
    ALREADY_RESOLVED = "already resolved"


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, with how many later rows of its key are held behind it (pending)."""

    id: int
    event_pk: int
    event_id: uuid.UUID
    topic: str
    key: bytes | None
    key_seq: int | None
    reason: str
    error_class: str
    attempts: int
    failed_at: datetime
    resolved_at: datetime | None
    resolution: Resolution | None
    resolved_by: str | None
    held_behind: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.resolved_at is None


_ev = event.alias("held")
_HELD_BEHIND = (sa.select(sa.func.count()).where(
    _ev.c.topic == dead_letter.c.topic, _ev.c.key == dead_letter.c.key,
    _ev.c.published_at.is_(None), _ev.c.dead_at.is_(None), dead_letter.c.resolved_at.is_(None))
    .scalar_subquery())
_DL_COLUMNS = (*dead_letter.c, _HELD_BEHIND)


def _dead_letter(r: sa.Row[Any], detail: dict[str, Any] | None = None) -> DeadLetter:
    m = r._mapping
    return DeadLetter(
        id=m["id"], event_pk=m["event_pk"], event_id=m["event_id"], topic=m["topic"],
        key=bytes(m["key"]) if m["key"] is not None else None, key_seq=m["key_seq"], reason=m["reason"],
        error_class=m["error_class"], attempts=m["attempts"], failed_at=m["failed_at"],
        resolved_at=m["resolved_at"], resolution=Resolution(m["resolution"]) if m["resolution"] else None,
        resolved_by=m["resolved_by"], held_behind=int(r[-1] or 0), detail=detail or {})


def list_dead_letters(conn: sa.Connection, *, include_resolved: bool = False, topic: str | None = None,
                      limit: int = 100) -> list[DeadLetter]:
    q = sa.select(*_DL_COLUMNS).order_by(dead_letter.c.id).limit(limit)
    if not include_resolved:
        q = q.where(dead_letter.c.resolved_at.is_(None))
    if topic is not None:
        q = q.where(dead_letter.c.topic == topic)
    with translate_errors("listing dead letters"):
        return [_dead_letter(r) for r in conn.execute(q).all()]


def get_dead_letter(conn: sa.Connection, dl_id: int) -> DeadLetter | None:
    """One dead letter with the event row's state, last error, headers and payload size."""
    q = sa.select(*_DL_COLUMNS).where(dead_letter.c.id == dl_id)
    ev = sa.select(event.c.created_at, event.c.dead_at, event.c.published_at, event.c.attempts,
                   event.c.last_error, event.c.type, event.c.source, event.c.content_type, event.c.headers,
                   sa.func.octet_length(event.c.payload).label("payload_bytes"), event.c.shard)
    with translate_errors(f"reading dead letter {dl_id}"):
        r = conn.execute(q).first()
        if r is None:
            return None
        row = conn.execute(ev.where(event.c.id == r._mapping["event_pk"])).first()
    return _dead_letter(r, dict(row._mapping) if row is not None else {"event_row": "missing"})


def resolve_dead_letter(conn: sa.Connection, dl_id: int, how: Resolution, actor: str, *,
                        shards: int) -> ResolveOutcome:
    """Retry or discard one open dead letter (see the module docstring); locks it first. A retried row goes to
    its key's shard under ``shards``, the count writers and relays use now."""
    with translate_errors(f"resolving dead letter {dl_id}"):
        r = conn.execute(sa.select(dead_letter.c.event_pk, dead_letter.c.resolved_at)
                         .where(dead_letter.c.id == dl_id).with_for_update()).first()
        if r is None:
            return ResolveOutcome.NOT_FOUND
        if r.resolved_at is not None:
            return ResolveOutcome.ALREADY_RESOLVED
        if how is Resolution.RETRIED:
            # The row becomes pending again with a fresh attempt budget. Its later rows of the same key are
            # pending too, with larger ids: the relay's id-ordered claim publishes this one first.
            row = conn.execute(sa.select(event.c.topic, event.c.key, event.c.event_id)
                               .where(event.c.id == r.event_pk, event.c.dead_at.is_not(None))).first()
            if row is not None:
                conn.execute(event.update().where(event.c.id == r.event_pk, event.c.dead_at.is_not(None))
                             .values(dead_at=None, attempts=0, last_error=None, shard=current_shard(row, shards)))
        conn.execute(dead_letter.update().where(dead_letter.c.id == dl_id)
                     .values(resolved_at=sa.func.now(), resolution=how.value, resolved_by=actor))
        note_requeued(conn)  # either way the key is released: its held rows may sit below a relay's claim floor
    return ResolveOutcome.DONE
