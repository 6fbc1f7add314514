"""What enqueue refuses is exactly what Kafka 4.3.1 refuses (issue 18, finding 4), against the real broker:

- the topic name rule: 249 characters is the real maximum (created, written, read), 250 is refused;
- the size count: ``outbox.envelope.record_bytes`` is the broker's own count of a record alone in its batch (a
  record of exactly the topic's ``max.message.bytes`` is appended, one byte more is refused), through the relay's
  producer settings (librdkafka's default ``message.max.bytes`` would refuse such a record before sending it);
- end to end: an event exactly at the limit with many small headers passes enqueue and is published by a real
  relay; one byte more is refused by enqueue, before the commit.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

import outbox
from outbox.config import DEFAULT_MAX_RECORD_BYTES, Settings
from outbox.envelope import record_bytes
from outbox.errors import PayloadError
from outbox.validation import record_size
from relay.config import RelaySettings
from relay.kafka.clients import producer_config
from stack.verify import consume_all
from tests.conftest import create_topic
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, pending, scalar, wait_until

pytestmark = pytest.mark.kafka
LIMIT = DEFAULT_MAX_RECORD_BYTES
HEADERS = [(f"h{i:04d}", "v") for i in range(2000)]  # 2000 headers: 8,000 bytes of framing the old count ignored


def test_249_characters_is_kafkas_real_maximum(bootstrap: str) -> None:
    longest = "t" + uuid.uuid4().hex + "x" * 216
    assert len(longest) == 249
    outbox.Event(topic=longest, type="t", source="urn:t")  # enqueue's rule accepts it ...
    create_topic(bootstrap, longest, partitions=10)  # ... and Kafka creates it ("<topic>-9" fits 255 bytes)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    too_long = longest + "x"
    with pytest.raises(KafkaException, match=r"INVALID_TOPIC|Topic name is invalid|too long|illegal"):
        admin.create_topics([NewTopic(too_long, 1, 1)], operation_timeout=30)[too_long].result(60)
    with pytest.raises(outbox.errors.TopicError, match="at most 249"):
        outbox.Event(topic=too_long, type="t", source="urn:t")


def _producer(bootstrap: str) -> Producer:
    s = RelaySettings.load({"compression": "none"}, environ={"OUTBOX_DATABASE_URL": "postgresql://u@h/db",
                                                             "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                                                             "OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX": "limits"})
    cfg = producer_config(s, 0)
    cfg["transactional.id"] = f"limits-{uuid.uuid4().hex}"
    p = Producer(cfg)
    p.init_transactions(30)
    return p


def _produce(p: Producer, topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> int | None:
    """None when the broker appended the record, else the librdkafka error code."""
    got: list[Any] = []
    p.begin_transaction()
    try:
        p.produce(topic, value, b"key", headers=headers, on_delivery=lambda err, _m: got.append(err))
        p.flush(30)
        p.commit_transaction(30)
    except KafkaException as exc:
        p.abort_transaction(30)
        return int(exc.args[0].code())
    return None if got[0] is None else int(got[0].code())


def test_the_size_count_is_the_brokers(bootstrap: str) -> None:
    topic = f"limits-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=1, config={"max.message.bytes": str(LIMIT)})
    headers = [(n, v.encode()) for n, v in HEADERS]
    sizes = [(len(n), len(v)) for n, v in headers]
    n = LIMIT - record_bytes(3, 0, sizes)
    while record_bytes(3, n, sizes) > LIMIT:
        n -= 1
    assert record_bytes(3, n, sizes) == LIMIT  # a value length whose record is exactly at the limit
    value = os.urandom(n + 1)
    p = _producer(bootstrap)
    try:
        assert _produce(p, topic, value[:n], headers) is None  # appended
        refused = _produce(p, topic, value, headers)
        assert refused == KafkaError.MSG_SIZE_TOO_LARGE, refused  # by the broker: librdkafka's check is looser
    finally:
        p.flush(5)


def test_an_event_at_the_limit_is_published_and_one_byte_more_is_refused_by_enqueue(
        fresh_db: str, bootstrap: str, relay_env: dict[str, str], relays: list[RelayProcess], tmp_path: Path) -> None:
    topic = f"limits-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=3, config={"max.message.bytes": str(LIMIT)})
    s = Settings(source="urn:t")

    def event(size: int) -> outbox.Event:
        return outbox.Event(topic=topic, type="size.test", key="k", data=b"x" * size, source="urn:t",
                            content_type="application/octet-stream", headers=HEADERS)

    e = event(0)
    n = LIMIT - record_size(e, b"", b"k")  # the varint of the value's length then takes a few bytes back
    while record_size(e, b"x" * n, b"k") > s.max_payload_bytes:
        n -= 1
    assert record_size(e, b"x" * n, b"k") == LIMIT
    eng = sa.create_engine(fresh_db, poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as c, pytest.raises(PayloadError, match=f"record of {LIMIT + 1} bytes"):
            outbox.enqueue(c, event(n + 1))
        with eng.begin() as c:
            [stored] = outbox.enqueue(c, event(n))
    finally:
        eng.dispose()

    r = spawn(relays, {**relay_env, "OUTBOX_RELAY_COMPRESSION": "none"}, tmp_path, "relay")
    wait_until(lambda: pending(fresh_db) == 0, 60, lambda: f"the relay to publish the event\n{r.logs()}")
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE dead_at IS NOT NULL") == 0, r.logs()
    [rec] = consume_all(bootstrap, [topic], settle_s=10)
    assert rec.value is not None and len(rec.value) == n
    assert rec.header("outbox-event-id") == str(stored.event_id).encode()
    assert len(rec.headers) == len(HEADERS) + 9  # ce_specversion/id/source/type/time, content-type, 3 outbox-*
