"""What the relay's recovery asks the database (mixed into ``RelayStore``): where the outbox lives and the id
recorded for it (relay/identity.py), and the rows a checkpoint of the previous format names, to check them
against Kafka before acting on it."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from outbox.schema import event, relay_identity
from outbox.store.relay_leases import relay_db

# (outbox id, system identifier, database, schema) as recorded in relay_identity.
Recorded = tuple[str, str, str, str]
_RECORDED = (relay_identity.c.outbox_id, relay_identity.c.system_identifier, relay_identity.c.database,
             relay_identity.c.schema)


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

    def recorded_identity(self) -> Recorded | None:
        """The outbox id recorded at the relays' first start, with where the outbox lived then."""
        with relay_db("reading the recorded outbox identity"), self._engine.connect() as c:
            row = c.execute(sa.select(*_RECORDED).where(relay_identity.c.id == 1)).one_or_none()
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]), str(row[3]))

    def record_identity(self, outbox_id: str, system_identifier: str, database: str, schema: str, *,
                        replace: bool = False) -> Recorded:
        """Record the outbox id (the first relay to start wins a race; ``replace`` overwrites); returns the row
        now recorded."""
        values = {"id": 1, "outbox_id": outbox_id, "system_identifier": system_identifier, "database": database,
                  "schema": schema}
        stmt = insert(relay_identity).values(**values)
        stmt = (stmt.on_conflict_do_update(index_elements=[relay_identity.c.id],
                                           set_={k: v for k, v in values.items() if k != "id"} |
                                           {"recorded_at": sa.func.now()})
                if replace else stmt.on_conflict_do_nothing(index_elements=[relay_identity.c.id]))
        with relay_db("recording the outbox identity"), self._engine.begin() as c:
            c.execute(stmt)
            row = c.execute(sa.select(*_RECORDED).where(relay_identity.c.id == 1)).one()
        return str(row[0]), str(row[1]), str(row[2]), str(row[3])

    def pending_events(self, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """id → (topic, event id) of those of ``ids`` still pending (neither published nor dead-lettered)."""
        if not ids:
            return {}
        q = sa.select(event.c.id, event.c.topic, event.c.event_id).where(
            event.c.id.in_(list(ids)), event.c.published_at.is_(None), event.c.dead_at.is_(None))
        with relay_db("reading the rows a checkpoint names"), self._engine.connect() as c:
            return {int(i): (str(t), str(e)) for i, t, e in c.execute(q)}
