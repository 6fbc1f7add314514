"""``outbox trace``: one event's journey, from the outbox row to every group's acknowledgement."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbox.errors import OutboxError, ReconcileError
from outbox.reconcile.model import key_text
from outbox.store import audit as store
from outbox.store import audit_copies


@dataclass(frozen=True)
class Journey:
    """What is known about one event; ``found`` is False when no database has heard of it."""

    query: str
    event: dict[str, Any] | None
    acknowledgements: tuple[dict[str, Any], ...]

    @property
    def found(self) -> bool:
        return self.event is not None or bool(self.acknowledgements)


def _iso(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


def trace(ident: str, producer: sa.Engine, schema: str,
          consumers: Sequence[tuple[sa.Engine, str]] = ()) -> Journey:
    """Trace ``ident`` (an event id, or an outbox row id) through the producer and consumer databases."""
    try:
        eid: uuid.UUID | None = uuid.UUID(ident)
        oid = None
    except ValueError:
        if not ident.isdigit():
            raise ReconcileError(f"{ident!r} is neither an event id (UUID) nor an outbox row id (integer)") from None
        eid, oid = None, int(ident)
    try:
        with producer.connect() as c:
            row = store.trace_event(c, schema, eid, oid)
            replays = audit_copies.replay_audits(c, schema, row.id, row.id) if row is not None else []
        ev = None
        if row is not None:
            ev = {k: _iso(v) for k, v in row._mapping.items()}
            ev["event_id"], ev["key"] = str(row.event_id), key_text(row.key)
            ev["replays"] = [{"audit_id": a.id, "actor": a.actor, "created_at": _iso(a.created_at)} for a in replays]
            eid = row.event_id
        acks: list[dict[str, Any]] = []
        if eid is not None:
            seen: set[tuple[str, str]] = set()
            for engine, sch in [(producer, schema), *consumers]:
                with engine.connect() as c:
                    for a in store.trace_acks(c, sch, eid):
                        label = engine.url.render_as_string(hide_password=True)
                        if (label, a.consumer_group) in seen:
                            continue
                        seen.add((label, a.consumer_group))
                        acks.append({**{k: _iso(v) for k, v in a._mapping.items()}, "database": label})
    except OutboxError as exc:
        raise ReconcileError(f"could not trace {ident}: {exc}") from exc
    return Journey(ident, ev, tuple(acks))
