"""The inbox against a real Postgres, fed by a fake consumer: records it cannot store and handlers that end its
transaction neither wedge the group nor leave a half-recorded event behind silently."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Mapping

import pytest
import sqlalchemy as sa

from outbox.errors import ConsumerError
from outbox.inbox import Inbox, ReceivedEvent, RetryPolicy
from outbox.kafka_consumer import KafkaRecord, Position
from tests.integration.audit.helpers import inbox_rows

Handler = Callable[[sa.Connection, ReceivedEvent], None]
ONCE = RetryPolicy(attempts=1, initial_wait=0, max_wait=0)


class Records:
    """A ConsumerPort over a fixed list of records of one partition; it re-reads from where it is rewound."""

    def __init__(self, records: list[KafkaRecord]) -> None:
        self.records, self.pos = records, 0
        self.committed: dict[Position, int] = {}
        self.rewound: list[dict[Position, int]] = []

    def poll_batch(self, max_records: int, timeout: float) -> list[KafkaRecord]:
        out = self.records[self.pos:self.pos + max_records]
        self.pos += len(out)
        return out

    def commit(self, next_offsets: Mapping[Position, int]) -> None:
        self.committed.update(next_offsets)

    def rewind(self, next_offsets: Mapping[Position, int]) -> None:
        self.rewound.append(dict(next_offsets))
        self.pos = next(i for i, r in enumerate(self.records) if r.offset == min(next_offsets.values()))

    def close(self) -> None: ...


def record(offset: int, *headers: tuple[str, bytes], key: bytes = b"k") -> KafkaRecord:
    h = (("outbox-event-id", str(uuid.uuid4()).encode()), *headers)
    return KafkaRecord(topic="orders", partition=0, offset=offset, key=key, value=b"{}", headers=h,
                       timestamp_ms=None)


def effect(conn: sa.Connection, ev: ReceivedEvent, grp: str = "g") -> None:
    conn.execute(sa.text("INSERT INTO public.effect (event_id, grp) VALUES (:e, :g)"), {"e": ev.event_id, "g": grp})


def effects(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.text("SELECT grp FROM public.effect")).scalars())


def inbox_for(engine: sa.Engine, records: list[KafkaRecord], handler: Handler = effect) -> tuple[Inbox, Records]:
    fake = Records(records)
    return Inbox(engine, f"g-{uuid.uuid4().hex[:8]}", ["orders"], handler, consumer=fake, retry=ONCE), fake


@pytest.mark.parametrize("header", ["outbox-key-seq", "outbox-id"])
def test_a_number_beyond_bigint_does_not_wedge_the_group(consumer_engine: sa.Engine, header: str) -> None:
    ib, fake = inbox_for(consumer_engine, [record(0, (header, b"99999999999999999999")), record(1)])
    result = ib.run_once()
    assert (result.processed, fake.committed, fake.rewound) == (2, {("orders", 0): 2}, [])
    rows = inbox_rows(consumer_engine, ib.group)
    assert rows[0].key_seq is None and rows[0].outbox_id is None and rows[0].outcome == "processed"


def test_a_time_python_cannot_read_back_is_stored_as_none(consumer_engine: sa.Engine) -> None:
    ib, _ = inbox_for(consumer_engine, [record(0, ("ce_time", b"9999-12-31T23:00:00-12:00"))])
    assert ib.run_once().processed == 1
    [row] = inbox_rows(consumer_engine, ib.group)  # used to raise psycopg.DataError: timestamp too large
    assert row.event_time is None


def test_a_key_too_large_for_the_index_is_dead_lettered_without_it(consumer_engine: sa.Engine) -> None:
    calls: list[int] = []

    def handler(conn: sa.Connection, ev: ReceivedEvent) -> None:
        calls.append(ev.offset)

    ib, fake = inbox_for(consumer_engine, [record(0, key=os.urandom(8000)), record(1)], handler)
    result = ib.run_once()
    assert (result.dead_lettered, result.processed, fake.committed) == (1, 1, {("orders", 0): 2})
    assert calls == [1], "the handler does not run for a record the inbox cannot record"
    dead, ok = inbox_rows(consumer_engine, ib.group)
    assert (dead.outcome, dead.key, dead.attempts, dead.processed_at is not None) == ("dead_lettered", None, 0, True)
    assert "8000-byte key" in dead.error and "ix_inbox_group_key_order" in dead.error
    assert "handler not run" in dead.error and ok.outcome == "processed"
    fake.pos = 0  # a redelivery is a duplicate, not a second dead letter
    assert ib.run_once().duplicates == 2


def commits(conn: sa.Connection, ev: ReceivedEvent) -> None:
    effect(conn, ev, "before")
    conn.commit()
    effect(conn, ev, "after")


def rolls_back(conn: sa.Connection, ev: ReceivedEvent) -> None:
    effect(conn, ev)
    conn.rollback()


def closes(conn: sa.Connection, ev: ReceivedEvent) -> None:
    effect(conn, ev)
    conn.close()


def rolls_back_and_raises(conn: sa.Connection, ev: ReceivedEvent) -> None:
    conn.rollback()
    raise ValueError("bad order")


def test_a_handler_that_commits_stops_the_inbox_and_its_row_says_so(consumer_engine: sa.Engine) -> None:
    ib, fake = inbox_for(consumer_engine, [record(0), record(1)], commits)
    with pytest.raises(ConsumerError, match="must not commit, roll back or close") as err:
        ib.run_once()
    assert "its inbox row was committed by the handler and is now dead-lettered" in str(err.value)
    [row] = inbox_rows(consumer_engine, ib.group)
    assert row.outcome == "dead_lettered" and row.processed_at is not None and row.kafka_offset == 0
    assert "the handler ended the inbox's transaction (commit/rollback)" in row.error
    assert effects(consumer_engine) == ["before"], "writes after the handler's own commit are rolled back"
    assert fake.committed == {} and fake.rewound == [{("orders", 0): 0}]
    with pytest.raises(ConsumerError, match="fix the handler and start a new Inbox"):
        ib.run_once()  # stopped: the next record is not handed to the same handler
    assert fake.pos == 0 and len(inbox_rows(consumer_engine, ib.group)) == 1


@pytest.mark.parametrize(("handler", "how"), [
    (rolls_back, "ended the inbox's transaction"), (closes, "closed the inbox's connection"),
    (rolls_back_and_raises, "ended the inbox's transaction"),
])
def test_a_handler_that_rolls_back_or_closes_stops_the_inbox_and_records_nothing(
        consumer_engine: sa.Engine, handler: Handler, how: str) -> None:
    ib, fake = inbox_for(consumer_engine, [record(0), record(1)], handler)
    with pytest.raises(ConsumerError, match=f"{how}.*nothing was recorded; it will be read again"):
        ib.run_once()
    assert inbox_rows(consumer_engine, ib.group) == [] and effects(consumer_engine) == []
    assert fake.committed == {} and fake.rewound == [{("orders", 0): 0}]


class OneWait(threading.Event):
    """Stops the loop at its first back-off, so run() returns once it has survived one error."""

    def wait(self, timeout: float | None = None) -> bool:
        self.set()
        return True


def test_run_survives_a_handler_that_ends_the_transaction(consumer_engine: sa.Engine) -> None:
    ib, _ = inbox_for(consumer_engine, [record(0)], commits)
    ib.run(OneWait(), error_backoff=0)  # used to die with a raw InvalidRequestError
    assert ib._stopped is not None
