"""Shards follow Kafka's partitioner: checked against the real client and broker, not against our own hash.

``shard_for`` hashes a key as Kafka's default partitioner does (outbox/keyhash.py), so that a shard's
transactions touch few partitions (docs/decisions/016). If the two hashes ever disagreed, nothing would break
(order and exactly-once never depend on it) but the affinity would silently vanish, so both tests ask Kafka.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

import outbox
from outbox.keyhash import kafka_partition
from tests.conftest import create_topic
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, dsn, pending, verify, wait_until, write_events


def _keys() -> list[bytes]:
    """Every tail length (0-3 bytes past a word), empty, long, and non-ASCII keys."""
    rnd = [os.urandom(n) for n in range(0, 70)]
    return [b"", b"a", b"order-1", "clé-ü".encode(), b"x" * 1500, *rnd, *(f"k{i}".encode() for i in range(100))]


def test_kafka_partition_is_the_partition_librdkafkas_murmur2_partitioner_picks(bootstrap: str) -> None:
    topic, partitions = f"hash-{uuid.uuid4().hex[:8]}", 7  # prime: a wrong modulus or sign shows at once
    create_topic(bootstrap, topic, partitions=partitions)
    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5})
    got: dict[bytes, int] = {}

    def delivered(err: object, msg: object) -> None:
        assert err is None, err
        got[msg.key()] = msg.partition()  # type: ignore[attr-defined]

    keys = _keys()
    for k in keys:
        p.produce(topic, key=k, value=b"v", on_delivery=delivered)
    assert p.flush(60) == 0
    assert len(got) == len(set(keys))
    wrong = {k: (part, kafka_partition(k, partitions)) for k, part in got.items()
             if part != kafka_partition(k, partitions)}
    assert not wrong, f"Kafka's partition vs ours: {list(wrong.items())[:5]}"
    eid = uuid.uuid4()
    assert all(outbox.shard_for(topic, k, eid, partitions) == part for k, part in got.items())


@pytest.fixture
def four_shards() -> Iterator[None]:
    outbox.configure(shards=4)
    yield
    outbox.configure()  # back to the environment's settings


@pytest.mark.usefixtures("four_shards")
def test_each_shard_publishes_to_its_own_partitions(
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str,
        tmp_path: Path) -> None:
    # 4 shards. 8 partitions: shard s may write only to partitions s and s + 4. 6 partitions (gcd 2): only to
    # the three partitions of s's parity, and the relay says once that a multiple of 4 would be better.
    run = uuid.uuid4().hex[:8]
    eight, six = f"aff8-{run}", f"aff6-{run}"
    create_topic(bootstrap, eight, partitions=8)
    create_topic(bootstrap, six, partitions=6)
    write_events(fresh_db, eight, 400, keys=80)
    write_events(fresh_db, six, 200, keys=40)
    r = spawn(relays, relay_env, tmp_path, "aff", OUTBOX_SHARDS="4")
    wait_until(lambda: pending(fresh_db) == 0, 90, lambda: f"the backlog to drain; relay log:\n{r.logs()}")
    v = verify(fresh_db, bootstrap, [eight, six])  # also checks kafka_partition against where Kafka has it
    assert v.clean and v.events == 600, str(v)
    for topic, modulus in ((eight, 4), (six, 2)):
        with psycopg.connect(dsn(fresh_db)) as c:
            pairs = c.execute("SELECT DISTINCT shard, kafka_partition FROM outbox.event WHERE topic = %s",
                              (topic,)).fetchall()
        assert {s for s, _ in pairs} == {0, 1, 2, 3}, pairs
        assert all(p % modulus == s % modulus for s, p in pairs), (topic, sorted(pairs))
    log = r.logs(lines=2000)
    assert log.count(f"topic '{six}' has 6 partitions and OUTBOX_SHARDS=4: each shard's transactions write to 3")\
        == 1, log
    assert f"topic '{eight}' has" not in log, log
