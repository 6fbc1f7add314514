"""One shard's transactional producer (``relay.ports.Transport``)."""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Collection
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from outbox.errors import KafkaUnavailableError
from relay.config import RelaySettings
from relay.kafka.clients import (
    _CONSEQUENCE,
    _QUICK_INIT_S,
    _call,
    _client_log,
    log,
    producer_config,
    topic_refusal,
    translate,
)
from relay.ports import Delivery, OutRecord

# Topics whose partition count this process has already compared with the shard count (one line per topic).
_ADVISED: set[str] = set()
_ADVISED_LOCK = threading.Lock()
# (bootstrap servers, topic) found usable in the metadata: not asked again for each batch. Forgotten when a
# transaction's records are not acknowledged in time (the topic may have been deleted since).
_USABLE: set[tuple[str, str]] = set()
_USABLE_LOCK = threading.Lock()
# Bound on one topic's metadata request: it runs before a batch's transaction opens, on the shard's hot path.
_METADATA_TIMEOUT_S = 5.0


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
        self._bootstrap = settings.bootstrap_servers
        self._txn_topics: set[str] = set()  # topics of the open transaction
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

    def topic_refusal(self, topic: str) -> str | None:
        """See ``relay.ports.Transport.topic_refusal``. Up front rather than at produce time: for a topic that
        does not exist librdkafka keeps the records until ``topic.metadata.propagation.max.ms`` or the message
        timeout, so the transaction only ever timed out (transient: retried forever, the shard stalled)."""
        if (self._bootstrap, topic) in _USABLE:
            return None
        try:
            md = self._producer.list_topics(topic, timeout=min(self._timeout, _METADATA_TIMEOUT_S))
        except KafkaException as exc:
            raise translate(exc.args[0], f"reading the metadata of topic {topic!r}") from exc
        found = md.topics.get(topic)
        err = None if found is None else found.error
        refusal = topic_refusal(topic, err)
        if refusal is None and found is not None and err is None and found.partitions:
            with _USABLE_LOCK:
                _USABLE.add((self._bootstrap, topic))
        return refusal

    def leaderless(self, topics: Collection[str]) -> list[str]:
        """See ``relay.ports.Transport.leaderless``. One metadata request for every topic (no per-topic request:
        a producer's request for a missing topic would create it where auto-create is on)."""
        try:
            md = self._producer.list_topics(timeout=min(self._timeout, _METADATA_TIMEOUT_S))
        except KafkaException as exc:
            raise translate(exc.args[0], "reading the partition leaders") from exc
        out: list[str] = []
        for name in topics:
            t = md.topics.get(name)
            if t is not None and t.error is None:
                out += [f"{name}-{p}" for p, pm in sorted(t.partitions.items()) if pm.leader < 0]
        return out

    def begin(self) -> None:
        self._raw = []
        self._txn_topics = set()
        _call(f"beginning a transaction ({self._tid})", self._producer.begin_transaction)

    def send(self, record: OutRecord) -> None:
        self._txn_topics.add(record.topic)
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
            with _USABLE_LOCK:  # a topic deleted since it was checked looks like this: check it again next time
                _USABLE.difference_update((self._bootstrap, t) for t in self._txn_topics)
            raise KafkaUnavailableError(f"{left} records not acknowledged within {self._timeout:.0f}s ({self._tid})")
        raw, self._raw = self._raw, []
        codes = {err.code() for _, err, _, _ in raw if err is not None}
        if codes and codes <= _CONSEQUENCE:  # purged, and no record to blame: ask the transaction why
            self._refused_as_a_whole()
        return [Delivery(ref, p, o) if err is None else
                Delivery(ref, -1, -1, KafkaUnavailableError(f"aborted with its transaction: {err.str()}")
                         if err.code() in _CONSEQUENCE else translate(err, f"delivering outbox row {ref}"))
                for ref, err, p, o in raw]

    def _refused_as_a_whole(self) -> None:
        """Records purged by librdkafka itself: the transaction failed as a whole, and the delivery reports do
        not say why (an AddPartitionsToTxn refusal names no record). ``begin_transaction`` is a side-effect-free
        way to ask: it only acts in the READY state, and in the abortable-error state a failed transaction is in,
        it returns that transaction's error. A permanent cause raises PermanentPublishError (a fencing or fatal
        one FencedError); a transient one leaves the purged records to be reported as consequences."""
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            cause = exc.args[0]
            if cause.code() in _CONSEQUENCE or cause.code() == KafkaError._STATE:
                return  # still in the transaction or purged by us: no cause to report
            err = translate(cause, f"the transaction ({self._tid}, topics {sorted(self._txn_topics)})")
            if not isinstance(err, KafkaUnavailableError):
                raise err from exc  # permanent: refused as a whole; fenced or fatal: the worker re-initialises
            return
        # READY: the transaction had already ended, so a new one began; the caller must not go on with it.
        raise KafkaUnavailableError(f"the transaction of {self._tid} ended while its records were in flight")

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
