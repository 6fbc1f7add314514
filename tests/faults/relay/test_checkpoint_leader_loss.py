"""Recovery while the checkpoint partition's leader is dead: it must wait, never answer from a partial read.

The chaos suite found this (seeds 7 and 102, 4 to 101 duplicates): a batch was committed to Kafka, its mark failed
(Postgres restarting), the relay was killed, and the broker leading the checkpoint partition was killed as the new
owner recovered. The old reader took the partition's end from ListOffsets, which answered -1001 (OFFSET_INVALID)
*without an error* while the leader was gone; an end below every offset meant "no checkpoint", so the committed,
unmarked batch was claimed and sent again. The end now comes from a produce acknowledgement (``probe_end``).

The check here is independent of timing: every recovery attempt either raises KafkaUnavailableError (retried by
the worker) or returns exactly the last committed checkpoint. ``None`` or an older checkpoint fails the test;
with the ListOffsets-based reader the first attempt after the kill returned ``None``.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka.admin import AdminClient

from outbox.errors import KafkaUnavailableError
from relay import checkpoint
from relay.config import RelaySettings
from relay.identity import OutboxIdentity
from relay.kafka import KafkaCheckpointLog, KafkaTransport
from stack.kafka import KafkaCluster

IDENT = OutboxIdentity("1", "db", "outbox")


def test_recovery_waits_for_the_checkpoint_leader_and_finds_the_last_batch(cluster3: KafkaCluster) -> None:
    run = uuid.uuid4().hex[:8]
    s = RelaySettings(database_url="postgresql+psycopg://unused@127.0.0.1:1/unused",
                      bootstrap_servers=cluster3.bootstrap, checkpoint_topic=f"cp-leader-loss-{run}",
                      transactional_id_prefix=f"leader-loss-{run}", kafka_timeout_s=5)
    log = KafkaCheckpointLog(s)
    log.ensure(1)
    values = [checkpoint.encode(IDENT, 0, 1, "old-owner", []) + f" {i}".encode() for i in range(3)]
    old = KafkaTransport(s, 0)
    old.init()
    for v in values:  # three committed batches; the last one is "committed but never marked"
        old.begin()
        old.send_checkpoint(0, checkpoint.key_for(s.transactional_id(0)), v)
        old.commit()
    old.close()

    md = AdminClient({"bootstrap.servers": cluster3.bootstrap}).list_topics(s.checkpoint_topic, timeout=10)
    leader = md.topics[s.checkpoint_topic].partitions[0].leader
    new = KafkaTransport(s, 0)
    new.init()  # the new owner fences the old one while the leader is alive ...
    cluster3.node(leader).kill()  # ... and the leader dies before the new owner reads
    answers: list[str] = []
    try:
        deadline = time.monotonic() + 120
        found: bytes | None = b"never read"
        while time.monotonic() < deadline:
            try:
                end = new.probe_end(0, checkpoint.opening_key_for(s.transactional_id(0)), checkpoint.probe(0, 2))
                found = log.read_last(0, end, checkpoint.key_for(s.transactional_id(0)))
                answers.append(f"read below {end}")
                break
            except KafkaUnavailableError as exc:  # the worker retries exactly this, with a new producer
                answers.append(f"unavailable: {str(exc)[:80]}")
                new.close()
                new = KafkaTransport(s, 0)
                try:
                    new.init()
                except KafkaUnavailableError as again:
                    answers.append(f"init: {str(again)[:80]}")
        assert found == values[-1], (found, answers)
    finally:
        new.close()
        cluster3.start_node(leader)
