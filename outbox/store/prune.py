"""The operators' retention SQL (``outbox prune``).

**prune** deletes published rows past the retention that a reconcile checkpoint covers for *every* consumer group
subscribed to the row's topic; rows of a topic no group subscribes to are never pruned. Every function takes the
caller's :class:`~sqlalchemy.engine.Connection` and never commits (see :mod:`outbox.store.ops`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from outbox.schema import event, reconcile_checkpoint, subscription
from outbox.store import translate_errors
from outbox.store.ops import PUBLISHED


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
    return sa.and_(PUBLISHED, event.c.published_at < cutoff, event.c.id <= ceiling)


def prune_plan(conn: sa.Connection, cutoff: datetime) -> PrunePlan:
    with translate_errors("planning a prune"):
        ceiling = _ceiling(conn)
        past = conn.execute(sa.select(sa.func.count()).where(PUBLISHED, event.c.published_at < cutoff)).scalar_one()
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
