"""Liveness vs readiness without a database or broker: the supervisor's probes through an outage and a stuck lease
round, a worker's collision exit stopping the process, and the start-up wait (relay/startup.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from outbox.errors import (
    ConfigError,
    DatabaseUnavailableError,
    KafkaUnavailableError,
    OutboxCollisionError,
    SchemaBehindError,
)
from outbox.store.relay_status import Lease, Stranded
from relay import supervisor as supervisor_module
from relay.config import RelaySettings
from relay.http import Pulse
from relay.startup import StartupWait
from relay.supervisor import Supervisor
from relay.worker import Exit
from stack.process import wait_for as poll
from tests.unit.relay.fakes import FakeCheckpointLog, FakeKafka, FakeTransport

ENV = {"OUTBOX_DATABASE_URL": "postgresql://h/d", "KAFKA_BOOTSTRAP_SERVERS": "k:1", "OUTBOX_SHARDS": "1",
       "OUTBOX_RELAY_WAKE_INTERVAL_S": "0", "OUTBOX_RELAY_CLAIM_FLOOR": "false",
       "OUTBOX_RELAY_RETRY_INITIAL_S": "0.01", "OUTBOX_RELAY_RETRY_MAX_S": "0.02"}


def settings(**env: str) -> RelaySettings:
    return RelaySettings.load(environ={**ENV, **env})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """The lease and stats queries of RelayStore; ``fault`` decides what the next heartbeat does."""

    def __init__(self) -> None:
        self.fault: Callable[[], None] | None = None
        self.free = False  # offer shard 0
        self.rounds = 0

    def ensure_leases(self, shards: int) -> None:
        return None

    def heartbeat(self, me: str, host: str, pid: int, ttl: float) -> list[str]:
        self.rounds += 1
        if self.fault is not None:
            self.fault()
        return [me]

    def renew(self, me: str, held: dict[int, int], ttl: float) -> dict[int, int]:
        return dict(held)

    def leases(self) -> list[Lease]:
        return [Lease(0, None, 0, None, None, None)] if self.free else []

    def acquire(self, me: str, shards: Sequence[int], ttl: float) -> dict[int, int]:
        return dict.fromkeys(shards, 1)

    def release(self, me: str, give: dict[int, int]) -> None:
        return None

    def deregister(self, me: str) -> None:
        return None

    def backlog_gauges(self, owned: Sequence[int]) -> list[Any]:
        return []

    def dead_letters_open(self) -> int:
        return 0

    def held_keys(self) -> list[Any]:
        return []

    def stranded(self, shards: int) -> Stranded:
        return Stranded(shards, 0, None)


def transports(kafka: FakeKafka) -> Any:
    return lambda shard: FakeTransport(kafka)  # never called here: no worker of these tests opens a producer


def down() -> None:
    raise DatabaseUnavailableError("connection refused")


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    poll(cond, timeout, "the supervisor's state", interval=0.01)


@pytest.fixture
def running() -> Iterator[Callable[..., tuple[Supervisor, FakeStore, Clock, threading.Event]]]:
    """Starts a supervisor's run() in a thread; stops it (and unblocks its store) afterwards."""
    started: list[tuple[Supervisor, threading.Event, threading.Thread, threading.Event]] = []

    def start(kafka_ok: Callable[[], bool] | None = None) -> tuple[Supervisor, FakeStore, Clock, threading.Event]:
        store, clock, stop, unblock = FakeStore(), Clock(), threading.Event(), threading.Event()
        kafka = FakeKafka()
        sup = Supervisor(settings(), store,  # type: ignore[arg-type]
                         transport_factory=transports(kafka), checkpoints=FakeCheckpointLog(kafka),
                         kafka_check=kafka_ok, clock=clock)
        t = threading.Thread(target=sup.run, args=(stop,), daemon=True)
        t.start()
        started.append((sup, stop, t, unblock))
        return sup, store, clock, unblock

    yield start
    for _sup, stop, t, unblock in started:
        stop.set()
        unblock.set()
        t.join(10)
        assert not t.is_alive()


def test_a_database_outage_keeps_healthz_and_fails_readyz_until_rounds_succeed(running: Any) -> None:
    sup, store, clock, _ = running()
    wait_for(sup.ready)
    store.fault = down
    n = store.rounds
    wait_for(lambda: store.rounds > n + 3)
    clock.now += 3600  # an hour-long outage: the loop keeps turning, so the process stays alive
    wait_for(lambda: store.rounds > n + 6)
    assert sup.healthy() and not sup.ready()
    store.fault = None
    wait_for(sup.ready)
    assert sup.healthy()


def test_a_lease_round_stuck_for_good_fails_healthz(running: Any) -> None:
    sup, store, clock, unblock = running()
    wait_for(sup.ready)
    entered = threading.Event()

    def stuck() -> None:
        entered.set()
        unblock.wait()  # a deadlock, or a call that never returns

    store.fault = stuck
    entered.wait(10)
    assert sup.healthy()
    clock.now += sup.pulse.window_s - 1
    assert sup.healthy(), "a slow round is not a dead process"
    clock.now += 2
    assert not sup.healthy() and not sup.ready()


def test_readyz_follows_kafka_while_healthz_stays(running: Any) -> None:
    answers = [True]
    sup, _store, _clock, _ = running(kafka_ok=lambda: answers[0])
    wait_for(sup.ready)
    answers[0] = False
    wait_for(lambda: not sup.ready(), timeout=5)  # checked every max(1 s, heartbeat)
    assert sup.healthy()
    answers[0] = True
    wait_for(sup.ready, timeout=5)


class CollidingWorker:
    """A worker that finds another outbox's checkpoint under its ids (as ShardWorker does: Exit.COLLISION)."""

    error = OutboxCollisionError("shard 0: the checkpoint belongs to outbox abc (another database)")

    def __init__(self, shard: int, epoch: int, **_: Any) -> None:
        self.fatal = self.error
        self.idle, self.claim_floor = False, 0

    def run(self, stop: threading.Event) -> Exit:
        return Exit.COLLISION

    def wake(self) -> None:
        return None


def test_a_worker_collision_stops_the_process_and_keeps_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "ShardWorker", CollidingWorker)
    store, kafka, stop = FakeStore(), FakeKafka(), threading.Event()
    store.free = True
    sup = Supervisor(settings(), store, transport_factory=transports(kafka),  # type: ignore[arg-type]
                     checkpoints=FakeCheckpointLog(kafka))
    t = threading.Thread(target=sup.run, args=(stop,), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "run() returns on its own: the collision stops the process"
    assert sup.fatal is CollidingWorker.error and stop.is_set()
    assert not sup.ready() and sup.owned == []


# --- the start-up wait -------------------------------------------------------------------------------------------
def waiter(stop: threading.Event | None = None, **env: str) -> StartupWait:
    return StartupWait(settings(**env), stop or threading.Event(), Pulse(60.0))


def test_start_up_waits_out_each_dependency_saying_what_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[Exception] = [DatabaseUnavailableError("refused"), SchemaBehindError("behind: run migrate"),
                                 KafkaUnavailableError("no broker")]

    def attempt() -> str:
        if failures:
            raise failures.pop(0)
        return "up"

    w = waiter()
    with caplog.at_level(logging.INFO, logger="relay.startup"):
        assert w.until(attempt) == "up"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == ["waiting for the database", "waiting for the outbox schema to be migrated", "waiting for Kafka"], \
        said
    assert [getattr(r, "attempt", None) for r in caplog.records if r.levelno == logging.WARNING] == [1, 2, 3]
    assert w.healthy() and not w.ready()


def test_a_configuration_error_ends_the_wait_at_once() -> None:
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise ConfigError("OUTBOX_SHARDS: strands rows")

    with pytest.raises(ConfigError):
        waiter().until(attempt)
    assert len(calls) == 1


def test_a_stop_ends_the_wait_even_inside_an_attempt() -> None:
    stop, release = threading.Event(), threading.Event()

    def hangs() -> None:
        release.wait(30)  # e.g. a connect to a host that never answers

    out: list[object] = ["not returned"]
    t = threading.Thread(target=lambda: out.__setitem__(0, waiter(stop).until(hangs)), daemon=True)
    t.start()
    t0 = time.monotonic()
    stop.set()
    t.join(5)
    release.set()
    assert not t.is_alive() and out == [None] and time.monotonic() - t0 < 2


def test_a_bounded_wait_gives_up_with_the_last_error() -> None:
    def attempt() -> None:
        raise KafkaUnavailableError("no broker answers")

    t0 = time.monotonic()
    with pytest.raises(KafkaUnavailableError):
        waiter(OUTBOX_RELAY_STARTUP_WAIT_S="0.3").until(attempt)
    assert time.monotonic() - t0 < 5
