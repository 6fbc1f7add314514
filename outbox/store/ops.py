"""The operators' replay SQL (``outbox replay``), and the re-queue helpers ``outbox dlq retry`` shares.

Dead letters live in :mod:`outbox.store.dead_letters`, retention in :mod:`outbox.store.prune`.

Every function takes the caller's :class:`~sqlalchemy.engine.Connection` (with the schema translate map already
applied) and never commits: the CLI decides the transaction boundaries, one short transaction per batch, so a
long operation never holds locks on the hot ``event`` table for long.

Semantics (docs/operations.md, docs/decisions/030-replay-and-dlq.md):

* **replay** re-queues *published* rows in place: ``published_at``, ``kafka_partition``, ``kafka_offset`` and
  ``relay_epoch`` are cleared, the event id stays, so inboxes deduplicate. Pending and dead rows are left alone.
* Replay and ``dlq retry`` both re-queue a row into its key's shard under the shard count in use *now*
  (``shards``, :func:`current_shard`): a row written before the count changed would otherwise go back to its old
  shard, stranded (no relay owns it) or published by a second relay beside the key's newer rows, out of order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from outbox.event import shard_for
from outbox.schema import event, relay_requeue, replay_audit
from outbox.store import translate_errors

PUBLISHED = event.c.published_at.is_not(None)
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
        sa.func.count().filter(PUBLISHED), sa.func.count().filter(_PENDING),
        sa.func.count().filter(event.c.dead_at.is_not(None)),
        sa.func.min(event.c.id).filter(PUBLISHED), sa.func.max(event.c.id).filter(PUBLISHED),
    ).where(sel.where())
    with translate_errors("planning a replay"):
        r = conn.execute(q).one()
    return ReplayPlan(int(r[0]), int(r[1]), int(r[2]), r[3], r[4])


def replay_sample(conn: sa.Connection, sel: ReplaySelector, limit: int = 20) -> list[EventBrief]:
    q = (sa.select(event.c.id, event.c.event_id, event.c.topic, event.c.key, event.c.key_seq, event.c.created_at,
                   event.c.published_at)
         .where(sel.where(), PUBLISHED).order_by(event.c.id).limit(limit))
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


def current_shard(r: Any, shards: int) -> int:
    """The shard of row ``r`` (``topic``, ``key``, ``event_id``) under the shard count in use now."""
    return shard_for(r.topic, None if r.key is None else bytes(r.key), r.event_id, shards)


def replay_batch(conn: sa.Connection, sel: ReplaySelector, audit_id: int, after_id: int, limit: int, *,
                 shards: int) -> list[int]:
    """Re-queue the next ``limit`` published rows with id > ``after_id``; returns their ids (ascending).

    The audit row is updated in the same transaction (count and compact id ranges), so the record always
    matches what was committed. ``FOR UPDATE`` serialises with a concurrent relay mark of the same rows.
    """
    victims = (sa.select(event.c.id, event.c.topic, event.c.key, event.c.event_id)
               .where(sel.where(), PUBLISHED, event.c.id > after_id)
               .order_by(event.c.id).limit(limit).with_for_update())
    with translate_errors("re-queueing a replay batch"):
        rows = conn.execute(victims).all()
        ids = [int(r.id) for r in rows]
        if ids:
            conn.execute(_REQUEUE, {"rq_ids": ids, "rq_shards": [current_shard(r, shards) for r in rows]})
            note_requeued(conn)
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


def note_requeued(conn: sa.Connection) -> None:
    """Rows became pending again, perhaps below the relays' claim floors: make their next claims start from the
    bottom. In the caller's transaction, so a claim sees the rows and the new generation together (ADR 015)."""
    conn.execute(relay_requeue.update().where(relay_requeue.c.id == 1).values(gen=relay_requeue.c.gen + 1))
