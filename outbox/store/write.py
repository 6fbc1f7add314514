"""The SQL of ``enqueue``: per-key sequences, then the event rows, in the caller's transaction.

Order (docs/decisions/001-per-key-commit-order.md): for each distinct ``(topic, key)`` of the call, one upsert
on ``key_sequence`` reserves ``n`` numbers and takes that row's lock, held until the caller commits or rolls back.
A second writer of the same key waits on the lock, so:

* sequence order equals commit order (the next writer only reads ``last_seq`` after this one committed);
* there are no gaps (a rollback undoes the increment);
* for one key, row id order equals sequence order (ids are drawn after the lock is taken), so a relay that claims
  pending rows by id within a shard publishes each key in commit order.

Keys are locked in sorted order inside one statement, so two calls with overlapping keys cannot deadlock each
other. (Separate ``enqueue`` calls in one transaction lock in call order; keep that consistent across writers.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from outbox.event import StoredEvent
from outbox.schema import event, key_sequence, translate_map
from outbox.store import translate_errors
from outbox.validation import Prepared

KeyCounts = dict[tuple[str, bytes], int]
Sequencer = Callable[[sa.Connection, KeyCounts, dict[str, Any]], dict[tuple[str, bytes], int]]


def locked_sequences(conn: sa.Connection, counts: KeyCounts, opts: dict[str, Any]) -> dict[tuple[str, bytes], int]:
    """Reserve ``n`` numbers per key under the key_sequence row lock; returns each key's new ``last_seq``."""
    rows = [{"topic": t, "key": k, "last_seq": n} for (t, k), n in sorted(counts.items())]
    ins = pg_insert(key_sequence).values(rows)
    stmt = ins.on_conflict_do_update(
        index_elements=[key_sequence.c.topic, key_sequence.c.key],
        set_={"last_seq": key_sequence.c.last_seq + ins.excluded.last_seq},
    ).returning(key_sequence.c.topic, key_sequence.c.key, key_sequence.c.last_seq)
    result = conn.execute(stmt, execution_options=opts)
    return {(r.topic, bytes(r.key)): r.last_seq for r in result}


def unlocked_sequences_for_tests(
    conn: sa.Connection, counts: KeyCounts, opts: dict[str, Any]
) -> dict[tuple[str, bytes], int]:
    """BROKEN ON PURPOSE: ``max(key_seq) + n`` from the snapshot, no lock. Only for proving the order test fails."""
    out: dict[tuple[str, bytes], int] = {}
    for (t, k), n in counts.items():
        q = sa.select(sa.func.coalesce(sa.func.max(event.c.key_seq), 0)).where(event.c.topic == t, event.c.key == k)
        out[(t, k)] = int(conn.execute(q, execution_options=opts).scalar_one()) + n
    return out


# Swapped only by tests/integration/write/test_commit_order.py to show that a broken sequencer is detected.
sequencer: Sequencer = locked_sequences


def insert_events(
    conn: sa.Connection, prepared: Sequence[Prepared], *, traceparent: str | None, schema: str
) -> list[StoredEvent]:
    """Assign key sequences, then insert every event in one multi-row INSERT. Never commits."""
    tm = translate_map(schema)
    opts: dict[str, Any] = {"schema_translate_map": tm} if tm else {}
    counts: KeyCounts = {}
    for p in prepared:
        if p.key is not None:
            counts[(p.event.topic, p.key)] = counts.get((p.event.topic, p.key), 0) + 1
    with translate_errors("enqueueing events"):
        last = sequencer(conn, counts, opts) if counts else {}
        # The first number of each key's block; events of one key are numbered in call order.
        nxt = {tk: last[tk] - n + 1 for tk, n in counts.items()}
        rows: list[dict[str, Any]] = []
        for p in prepared:
            seq = None
            if p.key is not None:
                tk = (p.event.topic, p.key)
                seq = nxt[tk]
                nxt[tk] = seq + 1
            e = p.event
            rows.append({
                "event_id": e.id, "topic": e.topic, "key": p.key, "shard": p.shard, "payload": p.payload,
                "content_type": e.content_type, "type": e.type, "source": e.source, "subject": e.subject,
                "time": e.time, "headers": p.headers, "traceparent": traceparent, "key_seq": seq,
            })
        stmt = sa.insert(event).returning(event.c.id, event.c.event_id)
        ids = {r.event_id: r.id for r in conn.execute(stmt, rows, execution_options=opts)}
    return [
        StoredEvent(id=ids[r["event_id"]], event_id=r["event_id"], topic=r["topic"], key=r["key"],
                    key_seq=r["key_seq"], shard=r["shard"])
        for r in rows
    ]


def select_pending(
    conn: sa.Connection, *, schema: str, topic: str | None, type_: str | None, key: bytes | bool | None
) -> list[sa.Row[Any]]:
    """Pending (unpublished, not dead) events in id order, for ``outbox.testing``. ``key=True`` means any key."""
    tm = translate_map(schema)
    q = sa.select(event).where(event.c.published_at.is_(None), event.c.dead_at.is_(None)).order_by(event.c.id)
    if topic is not None:
        q = q.where(event.c.topic == topic)
    if type_ is not None:
        q = q.where(event.c.type == type_)
    if key is None:
        q = q.where(event.c.key.is_(None))
    elif isinstance(key, bytes):
        q = q.where(event.c.key == key)
    with translate_errors("listing pending events"):
        return list(conn.execute(q, execution_options={"schema_translate_map": tm} if tm else {}))
