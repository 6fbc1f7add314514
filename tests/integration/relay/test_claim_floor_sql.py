"""The claim floor in SQL: an index bound, so a claim above it skips the entries a pinned horizon keeps alive."""

from __future__ import annotations

import re

import psycopg
import sqlalchemy as sa

from outbox.store.relay import _CLAIM, RelayStore
from tests.integration.relay.harness import write_events


def _claim_buffers(eng: sa.Engine, shard: int, floor: int, gen: int) -> int:
    stmt = _CLAIM.params(shard=shard, limit=100, floor=floor, gen=gen)
    sql = str(stmt.compile(dialect=eng.dialect, compile_kwargs={"literal_binds": True}))
    with eng.connect() as c:
        plan = "\n".join(r[0] for r in c.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql.replace("%", "%%")))
    assert "ix_event_pending" in plan and re.search(r"Index Cond: .*id > CASE", plan), plan
    return int(re.search(r"Buffers: shared hit=(\d+)", plan).group(1))  # type: ignore[union-attr]


def test_a_claim_above_the_floor_skips_published_rows_a_pinned_snapshot_keeps(fresh_db: str, topic: str) -> None:
    eng = sa.create_engine(fresh_db)
    dsn = fresh_db.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as pin:
        pin.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        pin.execute("SELECT 1")  # an analytics query's snapshot: vacuum and scans may not drop what it can see
        write_events(fresh_db, topic, 6000, keys=1, per_txn=500)  # one key: one shard
        with eng.begin() as c:
            shard, top = c.execute(sa.text("SELECT min(shard), max(id) FROM outbox.event")).one()
            c.execute(sa.text("UPDATE outbox.event SET published_at = now() WHERE id <= :top - 10"), {"top": top})
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            # Statistics as autovacuum leaves them: before its first analyze the planner took the primary key for
            # this claim once, under load (a plan choice, not the index bound this test measures).
            c.execute(sa.text("ANALYZE outbox.event"))
        store = RelayStore(eng)
        rows, snap = store.claim_above(shard, 100, 0, -1)
        assert len(rows) == 10  # the unbounded claim still finds the 10 pending rows...
        unbounded = _claim_buffers(eng, shard, 0, snap.gen)
        bounded = _claim_buffers(eng, shard, top - 10, snap.gen)
        assert unbounded > 5 * bounded, f"...but reads {unbounded} buffers; above the floor: {bounded}"
        assert [r.id for r in store.claim_above(shard, 100, top - 10, snap.gen)[0]] == [r.id for r in rows]
        assert store.claim_above(shard, 100, top, snap.gen)[0] == []
        pin.rollback()
    eng.dispose()


def test_a_cached_id_sequence_is_detected(fresh_db: str) -> None:
    """With CACHE > 1, ids are not drawn in time order, and the relay turns the floor off (ADR 015)."""
    eng = sa.create_engine(fresh_db)
    store = RelayStore(eng)
    assert store.id_sequence_cache() == 1
    with eng.begin() as c:
        c.execute(sa.text("ALTER TABLE outbox.event ALTER COLUMN id SET CACHE 20"))
    assert store.id_sequence_cache() == 20
    eng.dispose()


def test_the_horizon_is_above_a_running_xid_no_snapshot_lists(fresh_db: str, topic: str) -> None:
    """The claim's horizon bounds every xid assigned before its snapshot, including a running transaction's xid
    above every completed one (which pg_snapshot_xmax does not bound); the claim's synchronous_commit=off is
    local to its own implicit transaction and does not leak into the pooled connection."""
    eng = sa.create_engine(fresh_db, pool_size=1, max_overflow=0)
    write_events(fresh_db, topic, 5, keys=1)
    with eng.begin() as c:
        shard = int(c.execute(sa.text("SELECT min(shard) FROM outbox.event")).scalar_one())
    dsn = fresh_db.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as running:
        running.execute("BEGIN")
        xid = int(running.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0])  # type: ignore[index]
        rows, snap = RelayStore(eng).claim_above(shard, 100, 0, -1)
        assert len(rows) == 5
        assert snap.xmin <= xid < snap.horizon
        running.rollback()
    with eng.connect() as c:
        assert c.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    eng.dispose()
