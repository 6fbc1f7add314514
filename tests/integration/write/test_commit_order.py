"""Per-key commit order, proven with real concurrent writers, and shown to catch a broken sequencer.

Writers run in threads, each on its own connection: random keys (few of them), random delays while holding the
transaction open, random rollbacks. Right before COMMIT each transaction writes a row to an independent
``commit_log`` table (no trigger), whose ``pos`` comes from a sequence (non-transactional, monotonic). For two
transactions that touch the same key, the second can only pass enqueue after the first committed, so ``pos``
order is commit order for every pair that matters. The checker then demands, per key:

* ``key_seq`` is exactly 1..n (no gap, no duplicate), and only committed transactions' events exist;
* ordering events by ``key_seq`` orders their transactions by commit position;
* ordering by row id gives the same order as ``key_seq`` (what the relay relies on).
"""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID

import outbox
from outbox.schema import event
from outbox.store import write as store_write

KEYS = ["k0", "k1", "k2", "k3"]
TOPIC = "orders"

commit_log = sa.Table(
    "commit_log", sa.MetaData(schema="public"),
    sa.Column("pos", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("event_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
)


@dataclass(frozen=True)
class Outcome:
    committed: int
    rolled_back: int
    events: int


@pytest.fixture
def db(fresh_db: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(fresh_db, pool_size=12, max_overflow=0)
    commit_log.metadata.create_all(engine)
    yield engine
    engine.dispose()


def run_writers(engine: sa.Engine, *, writers: int, txns: int, seed: int) -> Outcome:
    counts = {"committed": 0, "rolled_back": 0, "events": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(n: int) -> None:
        rnd = random.Random(seed * 1000 + n)
        try:
            start.wait(timeout=60)
            with engine.connect() as conn:
                for _ in range(txns):
                    with conn.begin() as tx:
                        conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": rnd.uniform(0, 0.003)})
                        evs = [outbox.Event(topic=TOPIC, type="t", key=rnd.choice(KEYS), data={"w": n})
                               for _ in range(rnd.randint(1, 3))]
                        stored = outbox.enqueue(conn, *evs)
                        # hold the key locks a little, so other writers of the key queue up behind us
                        conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": rnd.uniform(0, 0.004)})
                        if rnd.random() < 0.25:
                            tx.rollback()
                            with lock:
                                counts["rolled_back"] += 1
                            continue
                        conn.execute(sa.insert(commit_log).values(event_ids=[s.event_id for s in stored]))
                    with lock:
                        counts["committed"] += 1
                        counts["events"] += len(stored)
        except BaseException as exc:  # surfaced by the caller
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,), name=f"writer-{i}") for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "writers did not finish within 240 s"
    if errors:
        raise errors[0]
    return Outcome(**counts)


def order_violations(engine: sa.Engine) -> list[str]:
    """Every way the stored events break per-key commit order (empty when the guarantee holds)."""
    with engine.connect() as conn:
        pos_of: dict[uuid.UUID, int] = {}
        for pos, ids in conn.execute(sa.select(commit_log.c.pos, commit_log.c.event_ids)):
            for eid in ids:
                pos_of[eid] = pos
        rows = conn.execute(sa.select(event.c.id, event.c.event_id, event.c.key, event.c.key_seq)
                            .where(event.c.topic == TOPIC)).all()
    problems: list[str] = []
    per_key: dict[bytes, list[Any]] = defaultdict(list)
    for r in rows:
        if r.event_id not in pos_of:
            problems.append(f"event {r.event_id} exists but its transaction is not in the commit log")
        per_key[bytes(r.key)].append(r)
    for key, evs in sorted(per_key.items()):
        by_seq = sorted(evs, key=lambda r: (r.key_seq, r.id))
        seqs = [r.key_seq for r in by_seq]
        if seqs != list(range(1, len(seqs) + 1)):
            dups = len(seqs) - len(set(seqs))
            problems.append(f"key {key!r}: key_seq is not 1..{len(seqs)} ({dups} duplicate(s), max {max(seqs)})")
        positions = [pos_of.get(r.event_id, -1) for r in by_seq]
        inversions = sum(1 for a, b in itertools.pairwise(positions) if b < a)
        if inversions:
            problems.append(f"key {key!r}: {inversions} place(s) where seq order differs from commit order")
        if [r.id for r in by_seq] != sorted(r.id for r in evs):
            problems.append(f"key {key!r}: row id order differs from key_seq order")
    return problems


def test_concurrent_writers_keep_per_key_commit_order(db: sa.Engine) -> None:
    outcome = run_writers(db, writers=12, txns=40, seed=1)
    assert outcome.committed > 300 and outcome.rolled_back > 60
    assert order_violations(db) == []
    with db.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(event)).scalar_one()
        last = {r.key: r.last_seq for r in conn.execute(sa.text("SELECT key, last_seq FROM outbox.key_sequence"))}
    assert stored == outcome.events  # nothing from a rolled-back transaction, nothing lost
    per_key_counts = {bytes(k): v for k, v in last.items()}
    assert sum(per_key_counts.values()) == outcome.events  # rollbacks gave their numbers back


def test_checker_catches_a_broken_sequencer(db: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_write, "sequencer", store_write.unlocked_sequences_for_tests)
    run_writers(db, writers=10, txns=12, seed=2)
    problems = order_violations(db)
    assert problems, "a sequencer without the row lock must be caught"
    assert any("key_seq is not 1.." in p for p in problems), problems
    assert any("differs from commit order" in p for p in problems), problems
