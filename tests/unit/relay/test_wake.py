"""The waker wakes exactly the shards that got new rows, skips over big writes, and survives a database outage."""

from __future__ import annotations

import threading
import time

from outbox.errors import ConfigError, DatabaseUnavailableError
from relay.wake import Waker


class FakeProbe:
    def __init__(self) -> None:
        self.rows: list[tuple[int, int]] = []  # (id, shard) committed so far
        self.down = False
        self.reads = 0
        self.refused = 0
        self.closed = False

    def newest_id(self) -> int:
        self._check()
        return max((i for i, _ in self.rows), default=0)

    def rows_after(self, after: int, limit: int) -> list[tuple[int, int]]:
        self._check()
        self.reads += 1
        return sorted(r for r in self.rows if r[0] > after)[:limit]

    def close(self) -> None:
        self.closed = True

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            raise DatabaseUnavailableError("database unavailable (fake)")


def test_wakes_only_the_shards_with_new_rows() -> None:
    probe, woken = FakeProbe(), []
    probe.rows = [(1, 0), (2, 1)]
    w = Waker(probe, woken.append, interval_s=0.01, limit=10)
    assert w.run_once() == 0 and woken == []  # the first probe only learns where the table ends
    assert w.run_once() == 0 and woken == []
    probe.rows += [(3, 5), (4, 2), (5, 5)]
    assert w.run_once() == 3
    assert woken == [frozenset({2, 5})]
    assert w.run_once() == 0 and len(woken) == 1  # seen rows do not wake anyone again


def test_a_big_write_wakes_everyone_once_and_is_not_read_through() -> None:
    probe, woken = FakeProbe(), []
    w = Waker(probe, woken.append, interval_s=0.01, limit=10)
    w.run_once()
    probe.rows = [(i, i % 8) for i in range(1, 1001)]
    assert w.run_once() == 10
    assert woken == [None]
    assert w.run_once() == 0 and woken == [None]  # skipped to the newest id, not 99 more reads


def test_a_database_outage_only_pauses_the_hints() -> None:
    probe, woken = FakeProbe(), []
    w = Waker(probe, woken.append, interval_s=0.001, limit=10)
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    probe.down = True
    t.start()
    try:
        deadline = time.monotonic() + 10
        while probe.refused == 0 and time.monotonic() < deadline:
            stop.wait(0.01)
        assert probe.refused and t.is_alive()
        probe.down = False
        while probe.reads == 0 and time.monotonic() < deadline:
            stop.wait(0.01)
        probe.rows = [(7, 3)]
        while not woken and time.monotonic() < deadline:
            stop.wait(0.01)
        assert woken == [frozenset({3})]
        assert t.is_alive()
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive() and probe.closed


def test_no_probe_while_every_worker_is_busy_then_it_skips_ahead() -> None:
    probe, woken, idle = FakeProbe(), [], [False]
    w = Waker(probe, woken.append, interval_s=0.01, limit=10, needed=lambda: idle[0])
    w.run_once()  # learns where the table ends even when busy
    probe.rows = [(i, i % 8) for i in range(1, 501)]
    reads = probe.reads
    assert w.run_once() == 0 and probe.reads == reads and woken == []
    idle[0] = True
    w.run_once()
    assert woken == [None]  # many rows since the last look: wake everyone, skip to the newest id
    probe.rows.append((501, 6))
    assert w.run_once() == 1 and woken == [None, frozenset({6})]


def test_a_probe_that_cannot_work_turns_the_waker_off_not_the_relay() -> None:
    class Unusable(FakeProbe):
        def newest_id(self) -> int:
            raise ConfigError("the relay's wake probe needs the psycopg (3) driver (fake)")

    probe = Unusable()
    w = Waker(probe, lambda _s: None, interval_s=0.001)
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive() and probe.closed  # returned (no traceback), connection released
