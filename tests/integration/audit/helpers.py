"""Test helpers for the audit area: a stand-in publisher for outbox rows, and discrepancy planting.

``publish_pending`` plays the relay's part for tests that must not wait for it: it reads pending rows of the
producer database, publishes them in one Kafka transaction with the envelope headers, and marks them published
with their partition and offset. The end-to-end test and the demo use the real relay instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

import outbox
from outbox.envelope import kafka_headers
from outbox.event import headers_from_json
from outbox.schema import event, inbox

Row = Any


def producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"audit-test-{uuid.uuid4().hex[:8]}",
                  "partitioner": "murmur2_random", "log_level": 3})
    p.init_transactions(30)
    return p


def headers_of(r: Row) -> list[tuple[str, bytes]]:
    return kafka_headers(event_id=r.event_id, source=r.source, type=r.type, time=r.time,
                         content_type=r.content_type, outbox_id=r.id, key_seq=r.key_seq, subject=r.subject,
                         traceparent=r.traceparent, user_headers=headers_from_json(r.headers))


def send(bootstrap: str, rows: Sequence[Row], *, topic: str | None = None,
         order: Callable[[list[Row]], list[Row]] | None = None) -> dict[int, tuple[int, int]]:
    """Produce ``rows`` in one Kafka transaction; returns outbox id -> (partition, offset)."""
    p = producer(bootstrap)
    where: dict[int, tuple[int, int]] = {}
    rows = order(list(rows)) if order else list(rows)

    errors: list[object] = []

    def done(rid: int) -> Callable[[object, Any], None]:
        def cb(err: object, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                where[rid] = (msg.partition(), msg.offset())
        return cb

    p.begin_transaction()
    for r in rows:
        p.produce(topic or r.topic, key=r.key, value=r.payload, headers=headers_of(r), on_delivery=done(r.id))
    p.flush(30)
    assert not errors, errors
    p.commit_transaction(30)
    return where


def publish_pending(engine: sa.Engine, bootstrap: str, *, skip: Callable[[Row], bool] = lambda r: False,
                    order: Callable[[list[Row]], list[Row]] | None = None) -> list[Row]:
    """Publish every pending row (except ``skip``) and mark it published; returns the published rows."""
    with engine.begin() as conn:
        rows = [r for r in conn.execute(sa.select(event).where(event.c.published_at.is_(None))
                                        .order_by(event.c.id)) if not skip(r)]
        where = send(bootstrap, rows, order=order)
        for r in rows:
            part, off = where[r.id]
            conn.execute(sa.update(event).where(event.c.id == r.id)
                         .values(published_at=sa.func.clock_timestamp(), kafka_partition=part, kafka_offset=off))
    return rows


def write_orders(engine: sa.Engine, topic: str, n: int, keys: int = 5) -> list[outbox.StoredEvent]:
    """``n`` events on ``topic`` over ``keys`` keys, committed in a few transactions."""
    out: list[outbox.StoredEvent] = []
    for start in range(0, n, 50):
        with engine.begin() as conn:
            out += outbox.enqueue(conn, *[
                outbox.Event(topic=topic, type="order.created", key=f"order-{i % keys}", data={"n": i})
                for i in range(start, min(n, start + 50))])
    return out


def inbox_rows(engine: sa.Engine, group: str) -> list[Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(inbox).where(inbox.c.consumer_group == group).order_by(inbox.c.id)))
