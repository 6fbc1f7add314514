"""The write side of the scenarios, through the real ``outbox.enqueue`` (its SQL, its per-key locks and xid), into
whichever schema a design uses: a backlog written before a drain, a steady background writer, and one
transaction held open."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import sqlalchemy as sa

import outbox
from bench.records import KEYS, payload

TOPIC = "orders"


def _event(i: int, key: str) -> outbox.Event:
    return outbox.Event(topic=TOPIC, type="bench.order", key=key, data=payload(i),
                        content_type="application/octet-stream")


def use(schema: str, shards: int) -> None:
    """Point ``outbox.enqueue`` at ``schema`` (the writers of every design use the same code)."""
    outbox.configure(schema=schema, shards=shards)


def backlog(engine: sa.Engine, n: int, per_txn: int) -> None:
    """``n`` events over ``KEYS`` keys, ``per_txn`` to a transaction, one writer."""
    with engine.connect() as c:
        for lo in range(0, n, per_txn):
            with c.begin():
                outbox.enqueue(c, *[_event(i, f"k{i % KEYS}") for i in range(lo, min(n, lo + per_txn))])


class SteadyWriter(threading.Thread):
    """Commits ``per_txn`` events at a time at ``rate`` events/s on the bench's keys until stopped, and notes
    when each row committed (row id → monotonic time)."""

    def __init__(self, engine: sa.Engine, rate: float, per_txn: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.rate, self.per_txn = engine, rate, per_txn
        self.stop = threading.Event()
        self.committed: dict[int, float] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _run(self) -> None:
        rnd = random.Random(7)
        i = 0
        started = time.monotonic()
        with self.engine.connect() as c:
            while not self.stop.is_set():
                with c.begin():
                    stored = outbox.enqueue(c, *[_event(i + j, f"k{rnd.randrange(KEYS)}")
                                                 for j in range(self.per_txn)])
                now = time.monotonic()
                self.committed.update((s.id, now) for s in stored)
                i += self.per_txn
                ahead = started + i / self.rate - time.monotonic()
                if ahead > 0:
                    self.stop.wait(ahead)


class LongTransaction:
    """One writer transaction held open: it enqueues ``rows`` events of its own keys (never written by anyone
    else, so no other writer waits for it) and commits only when told."""

    def __init__(self, engine: sa.Engine) -> None:
        self._conn: Any = engine.connect()
        self._txn: Any = None
        self.ids: list[int] = []
        self.committed_at = 0.0

    def begin(self, rows: int) -> None:
        self._txn = self._conn.begin()
        self.ids = [s.id for s in outbox.enqueue(self._conn, *[_event(10_000_000 + i, f"long-{i}")
                                                               for i in range(rows)])]

    def commit(self) -> None:
        self._txn.commit()
        self.committed_at = time.monotonic()
        self._conn.close()
