"""Baseline: today's protocol, with the product's own SQL.

The table comes from the real migrations (``alembic upgrade heads`` into its own schema); the relay side calls
``outbox.store.relay.RelayStore`` itself: ``claim_above`` (the pending-index claim with the claim floor of
``relay.floor.ClaimFloor``, on by default) and ``mark_published`` (the set-based UPDATE guarded by the lease
epoch), one of each per batch, exactly as ``relay/worker.py`` calls them. Only the Kafka transaction in between
is the no-op sink.
"""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa

from bench.storage_v2.design import Design
from bench.storage_v2.sink import Row
from outbox.store.relay import Mark, RelayStore
from relay.floor import ClaimFloor

OWNER = "bench-storage-v2"


class Today(Design):
    name = "today"
    schema = "sv2_today"
    statements = {
        "claim": "SELECT sv2_today.event.id, sv2_today.event.event_id%",
        "mark": "UPDATE sv2_today.event SET published_at%",
    }

    def create(self, admin: psycopg.Connection[Any]) -> None:
        from alembic import command

        from migrations import alembic_config

        admin.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'.encode())
        command.upgrade(alembic_config(self.url, schema=self.schema), "heads")

    def open(self) -> None:
        self._engine = sa.create_engine(self.url, pool_size=2)
        self.store = RelayStore(self._engine, schema=self.schema)
        self.store.ensure_leases(self.shards)
        self.epochs = self.store.acquire(OWNER, list(range(self.shards)), 3600.0)
        self.floors = {s: ClaimFloor(True) for s in range(self.shards)}

    def round(self) -> int:
        n = 0
        for shard in range(self.shards):
            floor = self.floors[shard]
            rows, snap = self.store.claim_above(shard, self.batch, *floor.bound())
            if not rows:
                continue
            floor.claimed(rows[-1].id, len(rows), self.batch, snap)
            out = [Row(r.id, shard, r.key, r.key_seq) for r in rows]
            p, first = self.sink.commit(shard, out, {"none": "the rows' state is the position"})
            self.store.mark_published(shard, OWNER, self.epochs[shard],
                                      [Mark(r.id, p, first + i) for i, r in enumerate(out)])
            floor.finished(None)
            n += len(rows)
        return n

    def close(self) -> None:
        self._engine.dispose()

    @property
    def tables(self) -> list[str]:
        return [f'"{self.schema}".event']

    def extra(self) -> dict[str, Any]:
        return {"claim_floors": [f.floor for f in self.floors.values()]}
