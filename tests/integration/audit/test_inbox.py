"""The consumer inbox against the real Kafka and Postgres: once per event, offsets after the DB commit,
retries then a recorded dead letter, duplicates from another position, producer and consumer in two databases."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from outbox.errors import ConsumerError
from outbox.inbox import BatchResult, Inbox, ReceivedEvent, RetryPolicy, session_handler
from outbox.kafka_consumer import KafkaConsumer
from outbox.schema import inbox, inbox_redelivery, subscription
from tests.integration.audit.helpers import inbox_rows, publish_pending, send, write_orders

pytestmark = pytest.mark.kafka


def drain(ib: Inbox, until: Callable[[list[BatchResult]], bool], timeout: float = 60) -> list[BatchResult]:
    results: list[BatchResult] = []
    deadline = time.monotonic() + timeout
    while not until(results):
        assert time.monotonic() < deadline, f"inbox {ib.group} did not get there in {timeout}s: {results}"
        results.append(ib.run_once())
    return results


def received(n: int) -> Callable[[list[BatchResult]], bool]:
    return lambda rs: sum(r.received for r in rs) >= n


def record_effect(group: str, calls: list[uuid.UUID]) -> Callable[[sa.Connection, ReceivedEvent], None]:
    def handler(conn: sa.Connection, ev: ReceivedEvent) -> None:
        calls.append(ev.event_id)
        conn.execute(sa.text("INSERT INTO public.effect (event_id, grp) VALUES (:e, :g)"),
                     {"e": ev.event_id, "g": group})
    return handler


def effects(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM public.effect")).scalar_one())


def test_each_event_once_and_redelivery_after_lost_offset_commit_is_skipped(
        producer_engine: sa.Engine, consumer_engine: sa.Engine, bootstrap: str, topic: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_orders(producer_engine, topic, 30)
    published = publish_pending(producer_engine, bootstrap)
    calls: list[uuid.UUID] = []
    first = Inbox(consumer_engine, "billing", [topic], record_effect("billing", calls), bootstrap=bootstrap)

    def crash(_offsets: object) -> None:
        raise ConsumerError("simulated crash between the DB commit and the offset commit")

    monkeypatch.setattr(first.consumer, "commit", crash)
    with pytest.raises(ConsumerError, match="simulated crash"):
        drain(first, received(30))
    first.close()
    assert len(calls) == 30 and effects(consumer_engine) == 30

    again = Inbox(consumer_engine, "billing", [topic], record_effect("billing", calls), bootstrap=bootstrap)
    results = drain(again, received(30))
    again.close()
    assert sum(r.duplicates for r in results) == 30 and sum(r.processed for r in results) == 0
    assert len(calls) == 30, "a redelivered event ran the handler again"
    rows = inbox_rows(consumer_engine, "billing")
    assert {r.event_id for r in rows} == {r.event_id for r in published}
    assert all(r.outcome == "processed" and r.processed_at is not None and r.outbox_id for r in rows)
    with consumer_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(inbox_redelivery)).scalar_one() == 0
        subs = conn.execute(sa.select(subscription.c.consumer_group, subscription.c.topic)).all()
    assert [tuple(s) for s in subs] == [("billing", topic)]


def test_offsets_are_committed_only_after_the_db_commit(
        producer_engine: sa.Engine, consumer_engine: sa.Engine, bootstrap: str, topic: str) -> None:
    write_orders(producer_engine, topic, 12, keys=3)
    publish_pending(producer_engine, bootstrap)
    seen: list[tuple[int, int, int]] = []
    ib: Inbox

    def handler(conn: sa.Connection, ev: ReceivedEvent) -> None:
        assert isinstance(ib.consumer, KafkaConsumer)
        committed = ib.consumer.committed([(ev.topic, ev.partition)])[(ev.topic, ev.partition)]
        seen.append((ev.partition, ev.offset, committed))

    ib = Inbox(consumer_engine, "shipping", [topic], handler, bootstrap=bootstrap)
    results = drain(ib, received(12))
    assert all(committed <= offset for _p, offset, committed in seen), seen
    ends = {}
    for r in results:
        ends.update(r.committed)
    final = ib.consumer.committed(list(ends))  # type: ignore[attr-defined]
    ib.close()
    assert final == ends
    with consumer_engine.connect() as conn:
        for (t, p), nxt in ends.items():
            last = conn.execute(sa.select(sa.func.max(inbox.c.kafka_offset)).where(
                inbox.c.topic == t, inbox.c.kafka_partition == p)).scalar_one()
            assert last == nxt - 1


def test_failing_handler_is_retried_then_dead_lettered_and_the_consumer_moves_on(
        producer_engine: sa.Engine, consumer_engine: sa.Engine, bootstrap: str, topic: str) -> None:
    stored = write_orders(producer_engine, topic, 10, keys=1)
    publish_pending(producer_engine, bootstrap)
    poison, flaky = stored[3].event_id, stored[6].event_id
    attempts: dict[uuid.UUID, int] = {}

    def handler(conn: sa.Connection, ev: ReceivedEvent) -> None:
        attempts[ev.event_id] = attempts.get(ev.event_id, 0) + 1
        conn.execute(sa.text("INSERT INTO public.effect (event_id, grp) VALUES (:e, 'g')"), {"e": ev.event_id})
        if ev.event_id == poison:
            raise ValueError(f"cannot bill order {ev.json()['n']}")
        if ev.event_id == flaky and attempts[flaky] == 1:
            raise TimeoutError("downstream timeout")

    waits: list[float] = []
    ib = Inbox(consumer_engine, "billing", [topic], handler, bootstrap=bootstrap,
               retry=RetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.05), sleep=waits.append)
    results = drain(ib, received(10))
    ib.close()
    assert sum(r.dead_lettered for r in results) == 1 and sum(r.processed for r in results) == 9
    assert attempts[poison] == 4 and attempts[flaky] == 2 and len(waits) == 3 + 1
    rows = {r.event_id: r for r in inbox_rows(consumer_engine, "billing")}
    assert len(rows) == 10
    dead = rows[poison]
    assert dead.outcome == "dead_lettered" and dead.attempts == 4 and "ValueError: cannot bill order 3" in dead.error
    assert rows[flaky].outcome == "processed" and rows[flaky].attempts == 2
    with consumer_engine.connect() as conn:
        effect_ids = set(conn.execute(sa.text("SELECT event_id FROM public.effect")).scalars())
    assert poison not in effect_ids and len(effect_ids) == 9, "a failed attempt's writes must roll back"


def test_a_copy_from_another_position_is_recorded_as_published_twice(
        producer_engine: sa.Engine, consumer_engine: sa.Engine, bootstrap: str, topic: str) -> None:
    write_orders(producer_engine, topic, 5)
    rows = publish_pending(producer_engine, bootstrap)
    send(bootstrap, [rows[2]])  # the same event again, as a relay that double-publishes would
    ib = Inbox(consumer_engine, "billing", [topic], lambda c, e: None, bootstrap=bootstrap)
    results = drain(ib, received(6))
    ib.close()
    assert sum(r.processed for r in results) == 5 and sum(r.copies for r in results) == 1
    with consumer_engine.connect() as conn:
        [copy] = conn.execute(sa.select(inbox_redelivery)).all()
    assert copy.event_id == rows[2].event_id and copy.consumer_group == "billing"


def test_a_lost_database_is_not_the_handlers_fault(
        producer_engine: sa.Engine, consumer_engine: sa.Engine, bootstrap: str, topic: str) -> None:
    write_orders(producer_engine, topic, 4, keys=1)
    publish_pending(producer_engine, bootstrap)
    down = {"on": True}

    def handler(conn: sa.Connection, ev: ReceivedEvent) -> None:
        if down["on"]:
            raise sa.exc.OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))

    ib = Inbox(consumer_engine, "billing", [topic], handler, bootstrap=bootstrap, sleep=lambda s: None)
    with pytest.raises(ConsumerError, match="database unavailable"):
        drain(ib, received(1))
    assert inbox_rows(consumer_engine, "billing") == [], "nothing may be acknowledged or dead-lettered"
    down["on"] = False
    results = drain(ib, lambda rs: sum(r.processed for r in rs) >= 4)
    ib.close()
    assert sum(r.dead_lettered for r in results) == 0
    assert len(inbox_rows(consumer_engine, "billing")) == 4


def test_producer_and_consumer_in_different_databases(
        producer_engine: sa.Engine, consumer_engine: sa.Engine, bootstrap: str, topic: str) -> None:
    write_orders(producer_engine, topic, 8)
    publish_pending(producer_engine, bootstrap)

    def orm_handler(s: Session, ev: ReceivedEvent) -> None:  # an ORM handler, joined to the inbox transaction
        s.execute(sa.text("INSERT INTO public.effect (event_id, grp) VALUES (:e, 'analytics')"), {"e": ev.event_id})

    ib = Inbox(consumer_engine, "analytics", [topic], session_handler(orm_handler), bootstrap=bootstrap)
    drain(ib, received(8))
    ib.close()
    assert len(inbox_rows(consumer_engine, "analytics")) == 8 and effects(consumer_engine) == 8
    assert inbox_rows(producer_engine, "analytics") == [], "acknowledgements live in the consumer's database"


def test_acknowledgements_can_be_published_to_an_ack_topic(
        producer_engine: sa.Engine, consumer_engine: sa.Engine, bootstrap: str, topic: str) -> None:
    from outbox.kafka_consumer import iter_acks
    from tests.conftest import create_topic

    acks_topic = f"{topic}-acks"
    create_topic(bootstrap, acks_topic, partitions=1)
    stored = write_orders(producer_engine, topic, 6)
    publish_pending(producer_engine, bootstrap)
    ib = Inbox(consumer_engine, "billing", [topic], lambda c, e: None, bootstrap=bootstrap, ack_topic=acks_topic)
    drain(ib, received(6))
    ib.close()
    acks = [a for batch in iter_acks(bootstrap, acks_topic) for a in batch]
    assert sorted(a["outbox_id"] for a in acks) == sorted(s.id for s in stored)
    assert {a["consumer_group"] for a in acks} == {"billing"} and {a["outcome"] for a in acks} == {"processed"}
