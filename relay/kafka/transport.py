"""One shard's transactional producer (``relay.ports.Transport``)."""

from __future__ import annotations

import functools
import math
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from outbox.errors import KafkaUnavailableError
from relay.config import RelaySettings
from relay.kafka.clients import _CONSEQUENCE, _QUICK_INIT_S, _call, _client_log, log, producer_config, translate
from relay.ports import Delivery, OutRecord

# Topics whose partition count this process has already compared with the shard count (one line per topic).
_ADVISED: set[str] = set()
_ADVISED_LOCK = threading.Lock()


class KafkaTransport:
    """One shard's transactional producer. Never waits per message: deliveries are collected at flush()."""

    def __init__(self, settings: RelaySettings, shard: int, lane: int = 0) -> None:
        self._timeout = settings.kafka_timeout_s
        self._checkpoint_topic = settings.checkpoint_topic
        self._tid = settings.transactional_id(shard, lane)
        self._config = producer_config(settings, shard, lane)
        self._producer = Producer(self._config, logger=_client_log)
        self._raw: list[tuple[int, KafkaError | None, int, int]] = []
        self._shards = settings.shards
        self._topics: set[str] = set()  # topics this producer has sent to (see _advise_partitions)
        self._new_topics: list[str] = []
        self.init_attempts = 0  # producers asked for a producer id by the last init() (read by tests)

    def _on_delivery(self, ref: int, err: KafkaError | None, msg: Any) -> None:
        # Runs inside flush(): only record, never build Python exceptions here (a fatal error may be pending).
        self._raw.append((ref, err, msg.partition(), msg.offset()))

    def init(self) -> None:
        """Fence every older producer of this transactional.id, aborting its open transaction.

        After a kill -9 the coordinator answers the first InitProducerId with CONCURRENT_TRANSACTIONS while it
        aborts the dead owner's transaction (tens of ms), and librdkafka asks again only after a fixed 500 ms:
        measured 0.57 or 1.02 s per takeover, a fifth of the failover budget. So ask with short deadlines first,
        and on a timeout replace the producer (its retry timer cannot be shortened) and ask again: 0.17-0.3 s.
        A replaced producer whose request still lands later only fences this one; its next call (the recovery
        probe, or the first batch on this lane) then fails as fenced and the worker initialises again, so the
        race costs time, never correctness.
        """
        doing = f"initialising transactions for {self._tid}"
        self.init_attempts = 0
        for budget in _QUICK_INIT_S:
            self.init_attempts += 1
            try:
                self._producer.init_transactions(budget)
                return
            except KafkaException as exc:
                # A timed-out init reports the last answer it saw (CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_...).
                if not exc.args[0].retriable():
                    raise translate(exc.args[0], doing) from exc
            # Dropped, not close()d: close() would try to abort a transaction while this init is pending.
            # The last reference goes here, so librdkafka destroys it (and its retry timer) right away.
            self._producer = Producer(self._config, logger=_client_log)
        self.init_attempts += 1
        _call(doing, self._producer.init_transactions, self._timeout)

    def begin(self) -> None:
        self._raw = []
        _call(f"beginning a transaction ({self._tid})", self._producer.begin_transaction)

    def send(self, record: OutRecord) -> None:
        if record.topic not in self._topics:
            self._topics.add(record.topic)
            self._new_topics.append(record.topic)
        cb = functools.partial(self._on_delivery, record.ref)
        while True:
            try:
                self._producer.produce(record.topic, record.value, record.key, headers=list(record.headers),
                                       on_delivery=cb)
                return
            except BufferError:
                # The local queue is full: let librdkafka drain some, then queue again (nothing lost).
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise translate(exc.args[0], f"producing outbox row {record.ref} to {record.topic!r}") from exc

    def send_checkpoint(self, partition: int, key: bytes, value: bytes, on_delivery: Any = None) -> None:
        try:
            self._producer.produce(self._checkpoint_topic, value, key, partition=partition, on_delivery=on_delivery)
        except (KafkaException, BufferError) as exc:
            err = exc.args[0] if isinstance(exc, KafkaException) else KafkaError(KafkaError._QUEUE_FULL)
            raise translate(err, "producing to the checkpoint partition") from exc

    def flush(self) -> list[Delivery]:
        deadline = time.monotonic() + self._timeout
        left = self._flush(self._timeout)
        while left and time.monotonic() < deadline:
            left = self._flush(max(0.1, deadline - time.monotonic()))
        if left:
            raise KafkaUnavailableError(f"{left} records not acknowledged within {self._timeout:.0f}s ({self._tid})")
        raw, self._raw = self._raw, []
        return [Delivery(ref, p, o) if err is None else
                Delivery(ref, -1, -1, KafkaUnavailableError(f"aborted with its transaction: {err.str()}")
                         if err.code() in _CONSEQUENCE else translate(err, f"delivering outbox row {ref}"))
                for ref, err, p, o in raw]

    def _advise_partitions(self) -> None:
        """Once per topic and process: say when a topic's partition count defeats the shard ↔ partition affinity.

        Shards follow Kafka's partitioner (docs/decisions/016), so a shard writes ``partitions / gcd(partitions,
        shards)`` partitions of a topic per transaction: one with a multiple of the shard count. Any count is
        correct; a poor one only costs broker work and latency, which nobody would otherwise trace to it."""
        topics, self._new_topics = self._new_topics, []
        with _ADVISED_LOCK:
            topics = [t for t in topics if t not in _ADVISED]
            _ADVISED.update(topics)
        for topic in topics:
            try:
                md = self._producer.list_topics(topic, timeout=2.0).topics.get(topic)
            except KafkaException as exc:  # advice only: never let it fail a batch
                log.debug("partition count of %r unknown: %s", topic, exc.args[0].str())
                continue
            partitions = len(md.partitions) if md is not None and md.error is None else 0
            per_shard = partitions // math.gcd(partitions, self._shards) if partitions else 1
            # A multiple (16 of 8: two each) is as good as it gets for that count; a divisor (4 of 8) gives one.
            if per_shard > 1 and partitions % self._shards:
                log.info(f"topic {topic!r} has {partitions} partitions and OUTBOX_SHARDS={self._shards}: each "
                         f"shard's transactions write to {per_shard} of them; with {self._shards} partitions "
                         f"they would write to one (docs/operations.md#partition-counts-and-the-shard-"
                         f"count)", extra={"topic": topic, "partitions": partitions, "shards": self._shards,
                                           "partitions_per_shard": per_shard})

    def _flush(self, timeout: float) -> int:
        try:
            return int(self._producer.flush(timeout))
        except KafkaException as exc:
            raise translate(exc.args[0], f"flushing ({self._tid})") from exc
        except SystemError as exc:  # a fatal error surfaced while a delivery callback ran
            ctx = exc.__context__ or exc.__cause__
            if isinstance(ctx, KafkaException):
                raise translate(ctx.args[0], f"flushing ({self._tid})") from exc
            raise KafkaUnavailableError(f"flushing ({self._tid}): {exc}") from exc

    def commit(self) -> None:
        _call(f"committing ({self._tid})", self._producer.commit_transaction, self._timeout)
        if self._new_topics:  # after the commit: a metadata lookup must not hold a transaction open
            self._advise_partitions()

    def abort(self) -> None:
        _call(f"aborting ({self._tid})", self._producer.abort_transaction, self._timeout)

    def probe_end(self, partition: int, key: bytes, value: bytes) -> int:
        # One record in a transaction of its own, acknowledged (acks=all), then aborted: see relay.ports.
        landed: list[tuple[KafkaError | None, int | None]] = []
        self.begin()
        self.send_checkpoint(partition, key, value, on_delivery=lambda err, msg: landed.append((err, msg.offset())))
        if self._flush(self._timeout) or not landed:
            raise KafkaUnavailableError(f"the recovery probe was not acknowledged within {self._timeout:.0f}s "
                                        f"({self._tid})")
        err, offset = landed[0]
        if err is not None:
            raise translate(err, "producing the recovery probe")
        if offset is None or offset < 0:
            raise KafkaUnavailableError(f"the recovery probe was acknowledged without an offset ({offset}, "
                                        f"{self._tid})")
        self.abort()
        return offset

    def close(self) -> None:
        # Closing never commits: an open transaction is aborted by the broker or by the next owner's init.
        try:
            self._producer.purge(in_queue=True, in_flight=False, blocking=False)
            self._producer.flush(0)
        except KafkaException as exc:  # a fenced producer is in a fatal state and refuses even these
            log.debug("closing %s: %s", self._tid, exc.args[0].str())
