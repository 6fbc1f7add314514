"""What the relay's recovery asks the database (mixed into ``RelayStore``): the outbox's identity, and the rows a
checkpoint of the previous format names, to check them against Kafka before acting on it."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from outbox.schema import event
from outbox.store.relay_leases import relay_db


class RecoveryQueries:
    """Mixed into ``RelayStore``; needs ``self._engine``."""

    _engine: sa.Engine

    def cluster_identity(self) -> tuple[str, str]:
        """(Postgres system identifier, database name): with the schema, what makes an outbox unique. The system
        identifier is set by initdb and kept by physical replicas, so a promoted standby is the same outbox."""
        with relay_db("reading the database identity"), self._engine.connect() as c:
            row = c.execute(sa.text("SELECT system_identifier::text, current_database() "
                                    "FROM pg_control_system()")).one()
        return str(row[0]), str(row[1])

    def pending_events(self, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """id → (topic, event id) of those of ``ids`` still pending (neither published nor dead-lettered)."""
        if not ids:
            return {}
        q = sa.select(event.c.id, event.c.topic, event.c.event_id).where(
            event.c.id.in_(list(ids)), event.c.published_at.is_(None), event.c.dead_at.is_(None))
        with relay_db("reading the rows a checkpoint names"), self._engine.connect() as c:
            return {int(i): (str(t), str(e)) for i, t, e in c.execute(q)}
