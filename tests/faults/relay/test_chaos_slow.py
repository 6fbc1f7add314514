"""Long fault runs (``make chaos``): random kills and freezes of several relays under load, and a broker failure
in a 3-node cluster. Same independent verification as the rest of the fault suite."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from stack.kafka import KafkaCluster
from stack.verify import find_hanging
from tests.faults.relay.test_failover import owners
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, pending, verify, wait_until, write_events


class Writer:
    """A steady stream of committed events (many keys) on a background thread."""

    def __init__(self, url: str, topic: str, per_round: int = 40, keys: int = 60) -> None:
        self.url, self.topic, self.per_round, self.keys = url, topic, per_round, keys
        self.stop = threading.Event()
        self.written = 0
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            write_events(self.url, self.topic, self.per_round, keys=self.keys, per_txn=self.per_round)
            self.written += self.per_round
            self.stop.wait(0.03)

    def __enter__(self) -> Writer:
        self.t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.t.join(60)


@pytest.mark.slow
def test_random_sigkills_of_three_relays_under_load(  # noqa: PLR0917
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str, topic: str,
        tmp_path: Path) -> None:
    rng = random.Random(20261122)
    names = ["r0", "r1", "r2"]
    live = {n: spawn(relays, relay_env, tmp_path, n, OUTBOX_RELAY_BATCH_SIZE="200") for n in names}
    kills = 0
    with Writer(fresh_db, topic) as w:
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline:
            _pause(rng.uniform(1.0, 4.0))
            victim = rng.choice(names)
            live[victim].kill()
            kills += 1
            live[victim] = spawn(relays, relay_env, tmp_path, f"{victim}-{kills}", OUTBOX_RELAY_BATCH_SIZE="200")
    wait_until(lambda: pending(fresh_db) == 0, 120, "the survivors to drain")
    for r in live.values():
        assert r.stop(30) == 0
    v = verify(fresh_db, bootstrap, [topic], timeout=180)
    assert kills >= 15 and v.clean and v.events == w.written, f"{kills} kills; {v}"


@pytest.mark.slow
def test_random_freezes_make_zombies_that_publish_nothing_twice(  # noqa: PLR0917
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str, topic: str,
        tmp_path: Path) -> None:
    rng = random.Random(7)
    rs = [spawn(relays, relay_env, tmp_path, f"z{i}", OUTBOX_RELAY_BATCH_SIZE="100") for i in range(2)]
    freezes = 0
    with Writer(fresh_db, topic):
        for _ in range(6):
            _pause(rng.uniform(1.0, 3.0))
            z = rng.choice(rs)
            z.signal(signal.SIGSTOP)  # at a random instant of its loop
            freezes += 1
            _pause(rng.uniform(3.5, 6.0))  # past the 3 s lease: the other one takes over and fences it
            z.signal(signal.SIGCONT)
    wait_until(lambda: pending(fresh_db) == 0, 120, "the backlog to drain")
    wait_until(lambda: sorted(str(o) for o in owners(fresh_db).values()).count("z0") == 4, 30, "a 4/4 split")
    for r in rs:
        assert r.stop(30) == 0
    v = verify(fresh_db, bootstrap, [topic], timeout=180)
    assert v.clean, f"{freezes} freezes; {v}"


@pytest.mark.slow
@pytest.mark.cluster
def test_broker_sigkill_in_a_three_node_cluster(
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, cluster3: KafkaCluster,
        tmp_path: Path) -> None:
    topic = f"c3-{tmp_path.name[-8:]}"
    cluster3.create_topic(topic, partitions=3)
    env = {**relay_env, "KAFKA_BOOTSTRAP_SERVERS": cluster3.bootstrap}
    r = spawn(relays, env, tmp_path, "relay", OUTBOX_RELAY_BATCH_SIZE="200")
    with Writer(fresh_db, topic) as w:
        wait_until(lambda: w.written > 1000, 60, "load to build up")
        cluster3.node(2).kill()  # SIGKILL one of three brokers (RF 3, min.insync 2): writes go on
        before = w.written
        wait_until(lambda: w.written > before + 2000, 90, "writes while a broker is down")
        cluster3.start_node(2)
        before = w.written
        wait_until(lambda: w.written > before + 1000, 90, "writes after it is back")
    wait_until(lambda: pending(fresh_db) == 0, 180, lambda: f"the relay to drain\n{r.logs()}")
    assert r.stop(30) == 0
    v = verify(fresh_db, cluster3.bootstrap, [topic], check_hanging=False, timeout=180)
    hanging = find_hanging(cluster3.bootstrap, [1, 2, 3])
    assert v.clean and v.events == w.written and not hanging, f"{v}; hanging={hanging}"


def _pause(seconds: float) -> None:
    """Let the run go on for ``seconds`` (a chaos schedule, not a wait for a condition)."""
    threading.Event().wait(seconds)

