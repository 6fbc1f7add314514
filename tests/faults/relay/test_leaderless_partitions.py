"""Fencing an open transaction while one of its partitions has no leader: Kafka drops that abort marker.

Found by the full fault run (17 duplicates, all in one partition, each pair of copies 17 or ~800 offsets apart,
after a broker bounce). Kafka 4.3.1's transaction coordinator skips the marker of every partition whose leader it
cannot find ("likely deleted already and hence can be skipped") and records the transaction as ended. The
aborted records stay undecided, and the *next* transaction of the same transactional id on that partition decides
them with its own outcome: when it commits, the aborted batch becomes visible beside the copy the relay re-sent.

The first test pins Kafka's behaviour (it fails if Kafka ever writes the marker or refuses the fencing, and is
the proof that the second test's check can fail). The second does what the shard worker does before it fences
(``ShardRecovery.await_leaders``): wait until ``leaderless()`` is empty; then the aborted record never appears.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from outbox.errors import KafkaUnavailableError
from relay.config import RelaySettings
from relay.kafka import KafkaTransport
from relay.ports import OutRecord
from stack.kafka import KafkaCluster
from stack.process import wait_for

LONELY = 3  # the broker holding the topic's only replica


@pytest.fixture
def lonely_topic(cluster3: KafkaCluster) -> Iterator[str]:
    """A one-partition topic whose only replica is on broker LONELY: killing it leaves the partition leaderless."""
    name = f"lonely-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replica_assignment=[[LONELY]],
                                  config={"min.insync.replicas": "1"})])[name].result(30)
    yield name
    if not cluster3.node(LONELY).running():
        cluster3.start_node(LONELY)


def _settings(cluster: KafkaCluster, topic: str) -> RelaySettings:
    run = uuid.uuid4().hex[:8]
    return RelaySettings(database_url="postgresql+psycopg://unused@127.0.0.1:1/unused",
                         bootstrap_servers=cluster.bootstrap, transactional_id_prefix=f"leaderless-{run}",
                         checkpoint_topic=topic, kafka_timeout_s=10)


def _open_transaction_then_lose_the_leader(cluster: KafkaCluster, s: RelaySettings, topic: str) -> KafkaTransport:
    old = KafkaTransport(s, 0)
    old.init()
    old.begin()
    old.send(OutRecord(ref=1, topic=topic, key=b"k", value=b"aborted batch", headers=()))
    assert old.flush()[0].error is None  # on the broker, in a transaction that a kill -9 leaves open
    cluster.node(LONELY).kill()
    probe = KafkaTransport(s, 1)  # another id: asking for metadata must not fence anything
    try:
        wait_for(lambda: probe.leaderless([topic]) == [f"{topic}-0"], 60, "the partition to lose its leader")
    finally:
        probe.close()
    return old


def _init(t: KafkaTransport, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            t.init()
            return
        except KafkaUnavailableError:
            assert time.monotonic() < deadline, "init_transactions never completed"


def _commit_one(t: KafkaTransport, topic: str) -> None:
    t.begin()
    t.send(OutRecord(ref=2, topic=topic, key=b"k", value=b"next batch", headers=()))
    assert t.flush()[0].error is None
    t.commit()


def _committed(cluster: KafkaCluster, topic: str) -> list[bytes]:
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"g-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "no end of partition within 60 s"
            for m in c.consume(100, timeout=0.2):
                err = m.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    return values
                if err is None:
                    values.append(m.value() or b"")
    finally:
        c.close()


@pytest.mark.slow  # pins Kafka's behaviour (make chaos); the relay's side runs in the default suite below
@pytest.mark.timeout(300)
def test_kafka_drops_the_abort_marker_of_a_leaderless_partition(cluster3: KafkaCluster, lonely_topic: str) -> None:
    s = _settings(cluster3, lonely_topic)
    old = _open_transaction_then_lose_the_leader(cluster3, s, lonely_topic)
    new = KafkaTransport(s, 0)
    _init(new)  # fences `old` while its partition has no leader: the coordinator skips that marker
    cluster3.start_node(LONELY)
    _commit_one(new, lonely_topic)
    assert _committed(cluster3, lonely_topic) == [b"aborted batch", b"next batch"], (
        "Kafka wrote the abort marker after all: the relay's wait for leaders may be unnecessary")
    new.close()
    old.close()


@pytest.mark.timeout(300)
def test_fencing_after_the_leader_is_back_keeps_the_aborted_batch_invisible(cluster3: KafkaCluster,
                                                                           lonely_topic: str) -> None:
    s = _settings(cluster3, lonely_topic)
    old = _open_transaction_then_lose_the_leader(cluster3, s, lonely_topic)
    new = KafkaTransport(s, 0)
    assert new.leaderless([lonely_topic, "no-such-topic"]) == [f"{lonely_topic}-0"]  # the worker waits here
    cluster3.start_node(LONELY)
    wait_for(lambda: not new.leaderless([lonely_topic]), 60, "the leader to come back")
    _init(new)
    _commit_one(new, lonely_topic)
    assert _committed(cluster3, lonely_topic) == [b"next batch"]
    new.close()
    old.close()
