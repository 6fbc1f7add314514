"""The operators' SQL: replay, dead-letter management and retention (``outbox replay | dlq | prune``).

Every function takes the caller's :class:`~sqlalchemy.engine.Connection` (with the schema translate map already
applied) and never commits: the CLI decides the transaction boundaries, one short transaction per batch, so a
long operation never holds locks on the hot ``event`` table for long.

Semantics (docs/operations.md, docs/decisions/030-replay-and-dlq.md):

* **replay** re-queues *published* rows in place: ``published_at``, ``kafka_partition``, ``kafka_offset`` and
  ``relay_epoch`` are cleared, the event id stays, so inboxes deduplicate. Pending and dead rows are left alone.
* **dlq retry** clears ``dead_at`` and ``attempts`` of the row and resolves its dead letter (``retried``); the
  key's later rows were held (still pending, larger ids), so the retried row goes first again.
* Both re-queue a row into its key's shard under the shard count in use *now* (``shards``): a row written before
  the count changed would otherwise go back to its old shard, stranded (no relay owns it) or published by a
  second relay beside the key's newer rows, out of order.
* **dlq discard** resolves the dead letter (``discarded``); the row stays dead, and the key is released.
* **prune** deletes published rows past the retention that a reconcile checkpoint covers for *every* consumer
  group subscribed to the row's topic; rows of a topic no group subscribes to are never pruned.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from outbox.event import shard_for
from outbox.schema import dead_letter, event, reconcile_checkpoint, relay_requeue, replay_audit, subscription
from outbox.store import translate_errors

_PUBLISHED = event.c.published_at.is_not(None)
_PENDING = sa.and_(event.c.published_at.is_(None), event.c.dead_at.is_(None))


# --- replay ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplaySelector:
    """Which rows to replay; the criteria given are ANDed. At least one must be set.

    ``id_from``/``id_to`` are inclusive row ids; ``since`` (inclusive) / ``until`` (exclusive) bound
    ``created_at``, the commit-side write time.
    """

    id_from: int | None = None
    id_to: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_ids: tuple[uuid.UUID, ...] = ()
    topic: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.id_from is not None or self.id_to is not None or self.since or self.until
                    or self.event_ids or self.topic)

    def where(self) -> sa.ColumnElement[bool]:
        conds: list[sa.ColumnElement[bool]] = []
        if self.id_from is not None:
            conds.append(event.c.id >= self.id_from)
        if self.id_to is not None:
            conds.append(event.c.id <= self.id_to)
        if self.since is not None:
            conds.append(event.c.created_at >= self.since)
        if self.until is not None:
            conds.append(event.c.created_at < self.until)
        if self.event_ids:
            conds.append(event.c.event_id.in_(list(self.event_ids)))
        if self.topic is not None:
            conds.append(event.c.topic == self.topic)
        return sa.and_(sa.true(), *conds)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id_from": self.id_from, "id_to": self.id_to,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "event_ids": [str(e) for e in self.event_ids], "topic": self.topic,
        }
        return {k: v for k, v in doc.items() if v not in (None, [])}


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay would do: ``replayable`` published rows, and matching rows it leaves alone."""

    replayable: int
    pending: int
    dead: int
    first_id: int | None
    last_id: int | None


@dataclass(frozen=True)
class EventBrief:
    id: int
    event_id: uuid.UUID
    topic: str
    key: bytes | None
    key_seq: int | None
    created_at: datetime
    published_at: datetime | None


def replay_plan(conn: sa.Connection, sel: ReplaySelector) -> ReplayPlan:
    q = sa.select(
        sa.func.count().filter(_PUBLISHED), sa.func.count().filter(_PENDING),
        sa.func.count().filter(event.c.dead_at.is_not(None)),
        sa.func.min(event.c.id).filter(_PUBLISHED), sa.func.max(event.c.id).filter(_PUBLISHED),
    ).where(sel.where())
    with translate_errors("planning a replay"):
        r = conn.execute(q).one()
    return ReplayPlan(int(r[0]), int(r[1]), int(r[2]), r[3], r[4])


def replay_sample(conn: sa.Connection, sel: ReplaySelector, limit: int = 20) -> list[EventBrief]:
    q = (sa.select(event.c.id, event.c.event_id, event.c.topic, event.c.key, event.c.key_seq, event.c.created_at,
                   event.c.published_at)
         .where(sel.where(), _PUBLISHED).order_by(event.c.id).limit(limit))
    with translate_errors("sampling a replay"):
        return [EventBrief(*r) for r in conn.execute(q).all()]


def unknown_event_ids(conn: sa.Connection, event_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """The ids of ``event_ids`` that no row has (never written, or pruned), in the order given."""
    if not event_ids:
        return []
    with translate_errors("looking up event ids"):
        known = set(conn.execute(sa.select(event.c.event_id).where(event.c.event_id.in_(list(event_ids))))
                    .scalars())
    return [e for e in dict.fromkeys(event_ids) if e not in known]


def start_replay_audit(conn: sa.Connection, actor: str, sel: ReplaySelector) -> int:
    """Insert the audit row first (count 0), so an interrupted replay is still on record."""
    doc = {"selector": sel.to_json(), "replayed_id_ranges": []}
    with translate_errors("recording the replay audit"):
        return int(conn.execute(replay_audit.insert().values(actor=actor, selector=doc, event_count=0)
                                .returning(replay_audit.c.id)).scalar_one())


def _build_requeue() -> sa.Update:
    ids = sa.bindparam("rq_ids", type_=ARRAY(sa.BigInteger))
    v = sa.func.unnest(ids, sa.bindparam("rq_shards", type_=ARRAY(sa.SmallInteger))
                       ).table_valued("id", "s").render_derived(name="v", with_types=False)
    # `id = ANY(:ids)` lets the planner fetch the rows by primary key (see outbox.store.relay's mark).
    return (event.update().where(event.c.id == sa.any_(ids), event.c.id == v.c.id)
            .values(shard=v.c.s, published_at=None, kafka_partition=None, kafka_offset=None, relay_epoch=None,
                    attempts=0, last_error=None))


_REQUEUE = _build_requeue()


def _shard(r: Any, shards: int) -> int:
    return shard_for(r.topic, None if r.key is None else bytes(r.key), r.event_id, shards)


def replay_batch(conn: sa.Connection, sel: ReplaySelector, audit_id: int, after_id: int, limit: int, *,
                 shards: int) -> list[int]:
    """Re-queue the next ``limit`` published rows with id > ``after_id``; returns their ids (ascending).

    The audit row is updated in the same transaction (count and compact id ranges), so the record always
    matches what was committed. ``FOR UPDATE`` serialises with a concurrent relay mark of the same rows.
    """
    victims = (sa.select(event.c.id, event.c.topic, event.c.key, event.c.event_id)
               .where(sel.where(), _PUBLISHED, event.c.id > after_id)
               .order_by(event.c.id).limit(limit).with_for_update())
    with translate_errors("re-queueing a replay batch"):
        rows = conn.execute(victims).all()
        ids = [int(r.id) for r in rows]
        if ids:
            conn.execute(_REQUEUE, {"rq_ids": ids, "rq_shards": [_shard(r, shards) for r in rows]})
            _requeued(conn)
            cur = conn.execute(sa.select(replay_audit.c.selector).where(replay_audit.c.id == audit_id)
                               .with_for_update()).scalar_one()
            doc = dict(cur)
            doc["replayed_id_ranges"] = _merge_ranges([*map(tuple, doc.get("replayed_id_ranges", []))], ids)
            conn.execute(replay_audit.update().where(replay_audit.c.id == audit_id)
                         .values(event_count=replay_audit.c.event_count + len(ids), selector=doc))
    return ids


def _merge_ranges(ranges: list[tuple[int, ...]], ids: Sequence[int]) -> list[list[int]]:
    """Compact ascending ids into ``[lo, hi]`` runs of consecutive ids, appended to earlier runs."""
    out = [list(r) for r in ranges]
    for i in ids:
        if out and out[-1][1] + 1 == i:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def replayed_ranges(conn: sa.Connection, id_lo: int, id_hi: int) -> list[tuple[int, int, int]]:
    """``(lo, hi, audit_id)`` of replayed id runs overlapping ``[id_lo, id_hi]``.

    For the reconciler: a second Kafka copy of an id inside one of these runs is an audited replay, not a
    duplicate publication.
    """
    with translate_errors("reading replay audits"):
        rows = conn.execute(sa.select(replay_audit.c.id, replay_audit.c.selector)).all()
    return [(lo, hi, int(a)) for a, doc in rows for lo, hi in (doc or {}).get("replayed_id_ranges", [])
            if lo <= id_hi and hi >= id_lo]


# --- dead letters ------------------------------------------------------------------------------------------
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
                             .values(dead_at=None, attempts=0, last_error=None, shard=_shard(row, shards)))
        conn.execute(dead_letter.update().where(dead_letter.c.id == dl_id)
                     .values(resolved_at=sa.func.now(), resolution=how.value, resolved_by=actor))
        _requeued(conn)  # either way the key is released: its held rows may sit below a relay's claim floor
    return ResolveOutcome.DONE


def _requeued(conn: sa.Connection) -> None:
    """Rows became pending again, perhaps below the relays' claim floors: make their next claims start from the
    bottom. In the caller's transaction, so a claim sees the rows and the new generation together (ADR 015)."""
    conn.execute(relay_requeue.update().where(relay_requeue.c.id == 1).values(gen=relay_requeue.c.gen + 1))


# --- prune -------------------------------------------------------------------------------------------------
def _covered() -> sa.ColumnElement[bool]:
    """The row's topic has subscribers, and a checkpoint of every one of them covers the row's id."""
    s, c = subscription.alias("s"), reconcile_checkpoint.alias("c")
    # Explicit correlation: auto-correlation only looks one level up, and ``cover`` sits two levels deep.
    cover = sa.exists().where(c.c.consumer_group == s.c.consumer_group, c.c.id_lo <= event.c.id,
                              c.c.id_hi >= event.c.id).correlate_except(c)
    return sa.and_(sa.exists().where(s.c.topic == event.c.topic).correlate_except(s),
                   ~sa.exists().where(s.c.topic == event.c.topic, ~cover).correlate_except(s))


@dataclass(frozen=True)
class PrunePlan:
    """``eligible`` rows would be deleted; ``uncovered`` are past retention but not yet checkpointed."""

    cutoff: datetime
    eligible: int
    uncovered: int
    id_ceiling: int | None


def _ceiling(conn: sa.Connection) -> int | None:
    # No row above the highest checkpointed id can be covered: a cheap bound that stops the scan early.
    v = conn.execute(sa.select(sa.func.max(reconcile_checkpoint.c.id_hi))).scalar_one()
    return None if v is None else int(v)


def _retired(cutoff: datetime, ceiling: int) -> sa.ColumnElement[bool]:
    return sa.and_(_PUBLISHED, event.c.published_at < cutoff, event.c.id <= ceiling)


def prune_plan(conn: sa.Connection, cutoff: datetime) -> PrunePlan:
    with translate_errors("planning a prune"):
        ceiling = _ceiling(conn)
        past = conn.execute(sa.select(sa.func.count()).where(_PUBLISHED, event.c.published_at < cutoff)).scalar_one()
        ok = 0 if ceiling is None else conn.execute(
            sa.select(sa.func.count()).where(_retired(cutoff, ceiling), _covered())).scalar_one()
    return PrunePlan(cutoff, int(ok), int(past) - int(ok), ceiling)


def prune_batch(conn: sa.Connection, cutoff: datetime, ceiling: int, after_id: int, limit: int) -> list[int]:
    """Delete the next ``limit`` covered rows with id > ``after_id``; returns their ids (ascending)."""
    victims = (sa.select(event.c.id).where(_retired(cutoff, ceiling), event.c.id > after_id, _covered())
               .order_by(event.c.id).limit(limit).with_for_update(skip_locked=True).cte("victims"))
    stmt = event.delete().where(event.c.id == victims.c.id).returning(event.c.id)
    with translate_errors("deleting a prune batch"):
        return sorted(int(r[0]) for r in conn.execute(stmt).all())


def prune_ceiling(conn: sa.Connection) -> int | None:
    with translate_errors("reading reconcile checkpoints"):
        return _ceiling(conn)
