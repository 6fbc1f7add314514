"""The transactional producer's init() against a real broker: the takeover of a producer killed mid-transaction.

A killed owner leaves its transaction open; the next owner's first InitProducerId makes the coordinator abort it
and is answered CONCURRENT_TRANSACTIONS, which librdkafka retries only after a fixed 500 ms. ``init()`` replaces
the producer after a short deadline instead (relay/kafka/transport.py). The checks do not time anything: they pin
that the quick replacement happened, that the old owner is fenced, and that only the new owner's record is
committed.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from outbox.errors import FencedError
from relay.config import RelaySettings
from relay.kafka import KafkaTransport, LaneTransport, shard_transport
from relay.ports import OutRecord


def _settings(bootstrap: str) -> RelaySettings:
    run = uuid.uuid4().hex[:8]
    return RelaySettings(database_url="postgresql+psycopg://unused@127.0.0.1:1/unused", bootstrap_servers=bootstrap,
                         transactional_id_prefix=f"init-{run}", checkpoint_topic=f"cp-init-{run}", kafka_timeout_s=20)


def _committed(bootstrap: str, topic: str) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "enable.partition.eof": True, "fetch.wait.max.ms": 10})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(3)])
        values: list[bytes] = []
        eof: set[int] = set()
        deadline = time.monotonic() + 60
        while len(eof) < 3:
            assert time.monotonic() < deadline, f"no end of partition within 60 s (seen {sorted(eof)})"
            for m in c.consume(100, timeout=0.2):
                err = m.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                elif err is None:
                    values.append(m.value())
        return values
    finally:
        c.close()


def test_init_fences_an_owner_killed_mid_transaction_without_waiting_out_librdkafkas_retry(
        bootstrap: str, topic: str) -> None:
    s = _settings(bootstrap)
    dead = KafkaTransport(s, 0)
    dead.init()
    dead.begin()
    dead.send(OutRecord(ref=1, topic=topic, key=b"k", value=b"from the dead owner", headers=()))
    assert dead.flush()[0].error is None  # appended, its transaction open: what a kill -9 leaves behind

    new = KafkaTransport(s, 0)
    new.init()
    # The first attempt cannot succeed while the old transaction is still open: a single attempt here means the
    # quick replacement is gone and the takeover waits out librdkafka's 500 ms retry again.
    assert new.init_attempts >= 2
    new.begin()
    new.send(OutRecord(ref=2, topic=topic, key=b"k", value=b"from the new owner", headers=()))
    assert new.flush()[0].error is None
    new.commit()

    with pytest.raises(FencedError):
        dead.commit()
    assert _committed(bootstrap, topic) == [b"from the new owner"]
    new.close()
    dead.close()



def _one(t: LaneTransport, topic: str, ref: int, value: bytes, *, commit: bool = True) -> None:
    t.begin()
    t.send(OutRecord(ref=ref, topic=topic, key=b"k", value=value, headers=()))
    assert t.flush()[0].error is None
    if commit:
        t.commit()


@pytest.mark.parametrize("new_lanes", [2, 1])
def test_a_takeover_fences_a_zombie_whose_open_transaction_is_on_the_second_producer(
        bootstrap: str, topic: str, new_lanes: int) -> None:
    # The zombie ran with two producers per shard (decision 017): its first batch committed on lane 0, its
    # second is open on lane 1. The new owner, with either setting, must fence lane 1 too, or that batch could
    # still commit after the new owner re-sent it.
    s = _settings(bootstrap)
    zombie = shard_transport(s, 0)
    zombie.init()
    _one(zombie, topic, 1, b"zombie batch 1")
    _one(zombie, topic, 2, b"zombie batch 2, open on lane 1", commit=False)
    assert zombie.current == 1

    new = shard_transport(s.model_copy(update={"producers_per_shard": new_lanes}), 0)
    new.init()
    with pytest.raises(FencedError):
        zombie.commit()
    _one(new, topic, 3, b"new owner")
    _one(new, topic, 4, b"new owner again")
    assert _committed(bootstrap, topic) == [b"zombie batch 1", b"new owner", b"new owner again"]
    new.close()
    zombie.close()
