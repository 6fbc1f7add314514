"""The compacted checkpoint topic (``relay.ports.CheckpointLog``), created at start if missing."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer as _Consumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from outbox.envelope import H_EVENT_ID
from outbox.errors import KafkaUnavailableError, PublishError
from relay import startup
from relay.config import RelaySettings
from relay.kafka.clients import TOPIC_REFUSALS, _call, _client_log, client_config, log, translate


class KafkaCheckpointLog:
    """The compacted checkpoint topic: key = shard, value = the shard's last committed batch."""

    def __init__(self, settings: RelaySettings) -> None:
        self._settings = settings
        self._topic = settings.checkpoint_topic
        self._partitions = 0
        self._admin = AdminClient(client_config(settings), logger=_client_log)

    def ensure(self, shards: int) -> int:
        md = _call("reading metadata", self._admin.list_topics, None, self._settings.kafka_timeout_s)
        if self._topic not in md.topics or md.topics[self._topic].error is not None:
            nt = NewTopic(self._topic, num_partitions=shards, replication_factor=self._settings.checkpoint_replication,
                          config={"cleanup.policy": "compact"})
            fut = self._admin.create_topics([nt], operation_timeout=self._settings.kafka_timeout_s)[self._topic]
            try:
                fut.result(self._settings.kafka_timeout_s)
                log.info("created checkpoint topic", extra={"topic": self._topic, "partitions": shards})
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise translate(exc.args[0], f"creating checkpoint topic {self._topic!r}") from exc
            except TimeoutError as exc:  # the future's own wait (a slow or restarting cluster): retried at start
                raise KafkaUnavailableError(f"creating checkpoint topic {self._topic!r}: no answer within "
                                            f"{self._settings.kafka_timeout_s:.0f}s") from exc
        md = self._await_partitions()
        self._partitions = len(md.topics[self._topic].partitions)
        if self._partitions < shards:
            log.warning("checkpoint topic has fewer partitions than shards; shards share partitions",
                        extra={"topic": self._topic, "partitions": self._partitions, "shards": shards})
        return self._partitions

    def _await_partitions(self) -> Any:
        # Right after creation the metadata can list the topic with no partitions yet (seen in tests): counting
        # those would map every shard to partition 0 in this instance while others read partition <shard>.
        deadline = time.monotonic() + self._settings.kafka_timeout_s
        while True:
            md = _call("reading metadata", self._admin.list_topics, self._topic, self._settings.kafka_timeout_s)
            t = md.topics.get(self._topic)
            if t is not None and t.error is None and t.partitions:
                return md
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(f"checkpoint topic {self._topic!r} has no partitions in the metadata "
                                            f"{self._settings.kafka_timeout_s:.0f}s after creating it")
            time.sleep(0.1)

    def partition_for(self, shard: int) -> int:
        return shard % max(1, self._partitions)

    def read_last(self, shard: int, end: int, key: bytes) -> bytes | None:
        """The value of the last record with ``key`` in the shard's partition below offset ``end``, read under
        read_committed
        backwards from ``end`` in growing windows (64, 512, 4096 … records), never the whole topic.

        ``end`` must come from a produce acknowledgement (``Transport.probe_end``), never from a metadata query:
        ListOffsets answered ``-1001`` (OFFSET_INVALID) with no error while the partition's leader was down
        (reproduced: tests/faults/relay/test_checkpoint_leader_loss.py), and a reader that trusted it found no
        checkpoint and re-sent a committed batch. For the same reason an offset reset goes to the *earliest*
        offset: the reader may re-read, it never skips.
        """
        tp = TopicPartition(self._topic, self.partition_for(shard))
        window = 64
        consumer = self._reader()
        try:
            while True:
                start = max(0, end - window)
                found = self._scan(consumer, tp, start, end, key)
                if found is not None or start == 0:
                    return found
                window *= 8
        finally:
            consumer.close()

    def _reader(self, reset: str = "earliest") -> Any:
        return _Consumer({**client_config(self._settings), "group.id": f"{self._settings.id_prefix}"
                          "-checkpoint-reader", "isolation.level": "read_committed",
                          "auto.offset.reset": reset, "enable.auto.commit": False,
                          "enable.partition.eof": True,
                          # Recovery sits on the failover path. With the default 500 ms the broker held an
                          # empty fetch (a window of aborted probes) that long; measured 1.0 s per takeover.
                          "fetch.wait.max.ms": 10}, logger=_client_log)

    def event_ids_at(self, positions: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], str]:
        """The ``outbox-event-id`` header of the committed record at each (topic, partition, offset); positions
        with no such record (out of range, compacted away, not an outbox record) are left out."""
        wanted: dict[tuple[str, int], set[int]] = {}
        for t, p, o in positions:
            wanted.setdefault((t, p), set()).add(o)
        found: dict[tuple[str, int, int], str] = {}
        consumer = self._reader(reset="error")  # an offset out of range answers at once, no re-read from 0
        try:
            for (t, p), offsets in wanted.items():
                lo, hi = min(offsets), max(offsets) + 1
                consumer.assign([TopicPartition(t, p, lo)])
                deadline = time.monotonic() + self._settings.kafka_timeout_s
                done = False
                while not done and time.monotonic() < deadline:
                    for m in consumer.consume(500, timeout=0.05):
                        err = m.error()
                        if err is not None:
                            if err.code() in _NOTHING_THERE:
                                done = True
                                continue
                            raise translate(err, f"reading {t}[{p}] to check a checkpoint")
                        if (m.topic(), m.partition()) != (t, p):
                            continue  # a late answer for the partition assigned before this one
                        if m.offset() >= hi:
                            done = True
                        elif m.offset() in offsets:
                            eid = dict(m.headers() or []).get(H_EVENT_ID)
                            if eid is not None:
                                found[(t, p, m.offset())] = eid.decode(errors="replace")
        finally:
            consumer.close()
        return found

    def _scan(self, consumer: Any, tp: TopicPartition, start: int, end: int, key: bytes) -> bytes | None:
        if start >= end:
            return None
        consumer.assign([TopicPartition(tp.topic, tp.partition, start)])
        last: bytes | None = None
        deadline = time.monotonic() + self._settings.kafka_timeout_s
        while time.monotonic() < deadline:
            # consume() waits out its whole timeout unless the batch fills: keep it short, EOF ends the scan.
            for m in consumer.consume(500, timeout=0.05):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= end:
                            return last
                        continue
                    raise translate(err, "reading checkpoints")
                if m.offset() >= end:
                    return last
                if m.key() == key:
                    last = m.value()
        raise KafkaUnavailableError(
            f"checkpoint partition {tp.topic}[{tp.partition}]: offsets {start}..{end} not readable under "
            f"read_committed within {self._settings.kafka_timeout_s:.0f}s: its leader is unavailable, or a "
            "transaction there is still open or hanging (Kafka can skip markers after a quick broker restart; find "
            "it with `kafka-transactions.sh find-hanging --broker-id <leader>` and abort it, see docs/operations.md, "
            "'Hanging transactions')")


# Answers meaning "no record at that position" when checking a previous-format checkpoint.
_NOTHING_THERE = frozenset({KafkaError._PARTITION_EOF, KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET,
                            KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION})

def open_checkpoint_log(settings: RelaySettings) -> KafkaCheckpointLog:
    """The checkpoint log, its topic created if missing. A refusal for a configuration reason is a ConfigError
    naming the variable; anything else stays a PublishError (Kafka unreachable)."""
    checkpoints = KafkaCheckpointLog(settings)
    try:
        checkpoints.ensure(settings.shards)
    except PublishError as exc:
        err = exc.__cause__.args[0] if isinstance(exc.__cause__, KafkaException) else None
        # Refusals of its creation that only a setting (or a grant) fixes: retrying never helps.
        refusal = TOPIC_REFUSALS.get(err.code()) if err is not None else None
        kind = refusal.created if refusal is not None else None
        if err is None or kind is None:
            raise
        raise startup.checkpoint_topic_refused(settings, kind, f"{err.name()}: {err.str()}") from exc
    return checkpoints
