"""One shard worker as the relay runs it (real Kafka transports and checkpoint log, real Postgres), driven by
``run_once`` so a test sees every round return; and rows written by raw SQL, bypassing ``enqueue``.

Used by the permanent-error and hostile-row tests: a row ``enqueue`` would refuse can still be written by hand, by
an older writer or by a bad migration, and the relay must dead-letter it without stalling its shard.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa

from outbox.schema import event
from outbox.store.relay import RelayStore
from relay import identity
from relay.config import RelaySettings
from relay.kafka import open_checkpoint_log, shard_transport
from relay.metrics import Metrics
from relay.worker import ShardWorker
from stack.verify import consume_all
from tests.integration.relay.harness import dsn


@dataclass
class RealShard:
    worker: ShardWorker
    store: RelayStore
    settings: RelaySettings
    engine: sa.Engine

    def run_until(self, cond: Callable[[], bool], timeout: float, what: str) -> int:
        """Call ``run_once`` until ``cond``; every round must return normally (no crash loop). Returns rounds."""
        deadline = time.monotonic() + timeout
        rounds = 0
        while not cond():
            assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s ({rounds} rounds) waiting for {what}"
            res = self.worker.run_once()
            rounds += 1
            if res.idle:
                time.sleep(0.05)  # as the loop's idle wait: a refused topic's next check is due later
        return rounds

    def close(self) -> None:
        self.worker.close()
        self.engine.dispose()


def real_shard(url: str, bootstrap: str, shard: int = 0, *, shards: int = 2, kafka_config: dict[str, str] | None = None,
               **overrides: Any) -> RealShard:
    """The worker of ``shard`` with short timeouts, its own transactional ids and checkpoint topic."""
    tag = uuid.uuid4().hex[:8]
    s = RelaySettings.load({"instance_id": f"w-{tag}", "shards": shards, "batch_size": 50, "max_attempts": 2,
                            "retry_initial_s": 0.01, "retry_max_s": 0.3, "kafka_timeout_s": 10,
                            "transactional_id_prefix": f"perm-{tag}", "checkpoint_topic": f"ckpt-{tag}",
                            **overrides}, kafka_config=kafka_config,
                           environ={"OUTBOX_DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    engine = sa.create_engine(url, pool_size=4)
    store = RelayStore(engine)
    s = identity.resolve(s, store)
    store.ensure_leases(shards)
    epoch = store.acquire(s.instance_id, [shard], 60)[shard]
    checkpoints = open_checkpoint_log(s)
    w = ShardWorker(shard, epoch, settings=s, store=store, transport_factory=lambda sh: shard_transport(s, sh),
                    checkpoints=checkpoints, metrics=Metrics())
    return RealShard(w, store, s, engine)


# The CHECKs of relay_0003 (live rows only, NOT VALID), as declared: dropped to write a row they refuse, then
# added back NOT VALID, which is what an upgrade over such a row leaves.
ROW_CHECKS = {c.name: str(c.sqltext) for c in event.constraints
              if isinstance(c, sa.CheckConstraint) and c.name != "ck_event_key_seq_iff_key"}


def insert_row(url: str, *, topic: str, key: bytes | None = None, shard: int = 0, payload: bytes = b'{"ok":1}',
               headers: str = "[]", time_sql: str = "now()", content_type: str = "application/json",
               type_: str = "test.event", source: str = "urn:test", bypass_checks: bool = False) -> tuple[int, str]:
    """One pending row by raw SQL; returns (id, event_id). ``bypass_checks`` writes it past relay_0003's CHECKs
    (dropped around the insert and re-added NOT VALID, as an upgrade over an existing bad row leaves them)."""
    eid = str(uuid.uuid4())
    with psycopg.connect(dsn(url)) as c:
        if bypass_checks:
            for name in ROW_CHECKS:
                c.execute(f"ALTER TABLE outbox.event DROP CONSTRAINT IF EXISTS {name}")
        row = c.execute(
            f"INSERT INTO outbox.event (event_id, topic, key, shard, payload, content_type, type, source, time, "
            f"headers, key_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, {time_sql}, %s::jsonb, %s) RETURNING id",
            (eid, topic, key, shard, payload, content_type, type_, source, headers,
             None if key is None else 1)).fetchone()
        if bypass_checks:
            for name, condition in ROW_CHECKS.items():
                c.execute(f"ALTER TABLE outbox.event ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
    assert row is not None
    return int(row[0]), eid


def dead_letter_reason(url: str, row_id: int) -> str | None:
    with psycopg.connect(dsn(url)) as c:
        got = c.execute("SELECT d.reason FROM outbox.dead_letter d JOIN outbox.event e ON e.id = d.event_pk "
                        "WHERE d.event_pk = %s AND e.dead_at IS NOT NULL AND d.resolved_at IS NULL",
                        (row_id,)).fetchone()
    return None if got is None else str(got[0])


def published(url: str, row_id: int) -> bool:
    with psycopg.connect(dsn(url)) as c:
        got = c.execute("SELECT published_at IS NOT NULL FROM outbox.event WHERE id = %s", (row_id,)).fetchone()
    return bool(got and got[0])


def in_kafka(bootstrap: str, topic: str) -> set[str]:
    """Event ids on ``topic`` as a read_committed reader sees them (independent of the relay's code)."""
    return {(r.header("outbox-event-id") or b"").decode() for r in consume_all(bootstrap, [topic], timeout=30,
                                                                                 settle_s=2.0)}
