"""A relay frozen (SIGSTOP) past its lease is a zombie: the next owner fences it on both sides, and when it
wakes (SIGCONT) it publishes nothing twice and marks nothing it should not."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from tests.faults.relay.test_failover import owners
from tests.integration.relay.conftest import spawn, spawn_faulty
from tests.integration.relay.harness import RelayProcess, pending, verify, wait_until, write_events


@pytest.mark.parametrize("point", ["mid_produce", "after_commit", "mid_mark"])
def test_frozen_relay_is_fenced_and_publishes_nothing_twice(  # noqa: PLR0917
        point: str, relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str,
        topic: str, tmp_path: Path) -> None:
    write_events(fresh_db, topic, 300, keys=12)
    zombie = spawn_faulty(relays, relay_env, tmp_path, "zombie", OUTBOX_RELAY_BATCH_SIZE="30",
                          FAULTY_RELAY_KILL_AT=point, FAULTY_RELAY_KILL_BATCH="3", FAULTY_RELAY_KILL_SIGNAL="STOP")
    wait_until(lambda: '"signal": "SIGSTOP"' in zombie.log.read_text(), 60, f"the relay to freeze itself at {point}")
    heir = spawn(relays, relay_env, tmp_path, "heir", OUTBOX_RELAY_BATCH_SIZE="30")
    stop = threading.Event()
    more = threading.Thread(target=lambda: [write_events(fresh_db, topic, 30, keys=12, key_prefix="late")
                                            for _ in range(10) if not stop.wait(0.2)], daemon=True)
    more.start()
    # The heir takes every shard once the zombie's leases expire, fences it, recovers, and keeps publishing.
    wait_until(lambda: set(owners(fresh_db).values()) == {"heir"}, 30, lambda: f"the takeover\n{heir.logs()}")
    more.join(60)
    wait_until(lambda: pending(fresh_db) == 0, 60, lambda: f"the heir to drain\n{heir.logs()}")
    zombie.signal(signal.SIGCONT)
    # The zombie wakes mid-protocol; it must find itself fenced, then rejoin as a peer (shards re-balance).
    wait_until(lambda: sorted(str(o) for o in owners(fresh_db).values()).count("zombie") == 4, 30,
               lambda: f"the woken relay to rejoin for its fair share\n{zombie.logs()}")
    write_events(fresh_db, topic, 100, keys=12, key_prefix="after")
    wait_until(lambda: pending(fresh_db) == 0, 60, "the last events to drain")
    stop.set()
    assert zombie.stop(30) == 0 and heir.stop(30) == 0
    v = verify(fresh_db, bootstrap, [topic])
    assert v.clean and v.events == 700, str(v)
    log = zombie.log.read_text()
    assert "fenced" in log or "no longer owned" in log or "shard lost" in log, "the zombie must have noticed"
