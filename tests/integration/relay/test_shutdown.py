"""Graceful shutdown: SIGTERM finishes the in-flight batch, releases the leases at once and exits 0 within the
drain deadline; a second signal exits at once. Either way a successor publishes exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from stack.env import Stack
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, dsn, pending, scalar, verify, wait_until, write_events


def lease_owners(url: str) -> set[str | None]:
    with psycopg.connect(dsn(url)) as c:
        return {o for (o,) in c.execute("SELECT owner FROM outbox.relay_lease")}


def test_sigterm_drains_releases_leases_and_exits_0(  # noqa: PLR0917
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str, topic: str,
        tmp_path: Path) -> None:
    write_events(fresh_db, topic, 6000, keys=50, per_txn=500)
    r = spawn(relays, relay_env, tmp_path, "first", OUTBOX_RELAY_BATCH_SIZE="200")
    wait_until(lambda: int(scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE published_at IS NOT NULL"))  # type: ignore[arg-type]
               > 400, 60, "publishing to be under way")
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 0, r.logs()
    took = time.monotonic() - t0
    assert took < 10, f"graceful stop took {took:.1f}s"
    assert lease_owners(fresh_db) == {None}, "leases are released, not left to expire"
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.relay_instance") == 0
    nxt = spawn(relays, relay_env, tmp_path, "next", OUTBOX_RELAY_BATCH_SIZE="500")
    wait_until(lambda: pending(fresh_db) == 0, 120, lambda: f"the successor to drain\n{nxt.logs()}")
    assert nxt.stop(30) == 0
    v = verify(fresh_db, bootstrap, [topic])
    assert v.clean and v.events == 6000, str(v)


@pytest.mark.parametrize("how", ["second_signal", "deadline"])
def test_stuck_drain_ends_by_second_signal_or_deadline(  # noqa: PLR0917
        how: str, relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str,
        topic: str, stack: Stack, tmp_path: Path) -> None:
    if stack.kafka is None:
        pytest.fail("this test pauses the broker, which needs the harness's own Kafka")
    write_events(fresh_db, topic, 4000, keys=40, per_txn=500)
    r = spawn(relays, relay_env, tmp_path, "stuck", OUTBOX_RELAY_BATCH_SIZE="200",
              OUTBOX_RELAY_DRAIN_DEADLINE_S="60" if how == "second_signal" else "3")
    wait_until(lambda: int(scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE published_at IS NOT NULL"))  # type: ignore[arg-type]
               > 200, 60, "publishing to be under way")
    broker = stack.kafka.node(1)
    broker.pause()  # the in-flight batches cannot finish: the drain is stuck
    try:
        r.signal(signal.SIGTERM)
        t0 = time.monotonic()
        if how == "second_signal":
            wait_until(lambda: '"stopping: finishing in-flight' in r.log.read_text(), 10, "the first signal")
            assert r.alive(), "the drain should be stuck on the paused broker"
            r.signal(signal.SIGINT)
            assert r.wait(10) == 130
            assert time.monotonic() - t0 < 5
        else:
            assert r.wait(30) == 0, r.logs()
            assert 2.5 < time.monotonic() - t0 < 10
            assert "did not drain before the deadline" in r.log.read_text()
    finally:
        broker.resume()
    nxt = spawn(relays, relay_env, tmp_path, "next", OUTBOX_RELAY_BATCH_SIZE="500")
    wait_until(lambda: pending(fresh_db) == 0, 120, lambda: f"the successor to drain\n{nxt.logs()}")
    assert nxt.stop(30) == 0
    v = verify(fresh_db, bootstrap, [topic])
    assert v.clean and v.events == 4000, str(v)
