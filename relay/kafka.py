"""The relay's only contact with Kafka (the only ``confluent_kafka`` import in ``relay/``).

librdkafka errors are translated here, once, into :mod:`outbox.errors`:

* ``FencedError``            a newer producer with our transactional.id exists (we are a zombie), or fatal error
* ``PermanentPublishError``  the broker will never take this record (too large, invalid/unknown topic, denied)
* ``KafkaUnavailableError``  everything else: timeouts, transport, coordinator moves (retry with backoff)
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from confluent_kafka import Consumer as _Consumer
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from outbox.errors import FencedError, KafkaUnavailableError, PermanentPublishError, PublishError
from relay import startup
from relay.config import RelaySettings
from relay.ports import Delivery, OutRecord

log = logging.getLogger("relay.kafka")
# librdkafka's own lines: a child logger, kept at WARNING by relay.logs unless debugging (ours stay at INFO).
_client_log = logging.getLogger("relay.kafka.client")

_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
_PERMANENT = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.TOPIC_EXCEPTION, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC, KafkaError.POLICY_VIOLATION, KafkaError._INVALID_ARG,
    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
})
# init(): deadlines of the quick attempts before one with the full timeout (see KafkaTransport.init).
_QUICK_INIT_S = (0.15, 0.2, 0.25, 0.3)
# Records failed only because their transaction was aborted or purged: a consequence, never a cause.
_CONSEQUENCE = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


def translate(err: KafkaError, doing: str) -> PublishError:
    """Map one librdkafka error to the tree (the caller raises it ``from`` the original exception)."""
    code = err.code()
    text = f"{doing}: {err.name()}: {err.str()}"
    if code in _FENCED:
        return FencedError(f"fenced while {text}")
    if code in _PERMANENT:
        return PermanentPublishError(text)
    if err.fatal():
        # Fatal producer errors cannot be cleared on this instance; the worker drops it and re-initialises,
        # which re-runs recovery, like a fencing.
        return FencedError(f"fatal producer error while {text}")
    return KafkaUnavailableError(text)


def _call(doing: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except KafkaException as exc:
        raise translate(exc.args[0], doing) from exc


def producer_config(settings: RelaySettings, shard: int) -> dict[str, Any]:
    """The producer settings of DESIGN §4 (tuned in bench/relay.py); passthrough keys override tuning ones."""
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        # Same partitions as Java clients for the same key (librdkafka's default hash differs).
        "partitioner": "murmur2_random",
        "compression.type": settings.compression.value,
        "linger.ms": settings.linger_ms,
        "transaction.timeout.ms": settings.transaction_timeout_ms,
        # A record not delivered within the transaction's life fails it (and the batch is retried).
        "message.timeout.ms": settings.transaction_timeout_ms,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": max(100000, settings.batch_size * 4),
        "log_level": 4,
    }
    cfg.update(settings.kafka_extra)
    cfg.update({"transactional.id": settings.transactional_id(shard), "enable.idempotence": True, "acks": "all"})
    return cfg


def client_config(settings: RelaySettings) -> dict[str, Any]:
    """Settings for admin/consumer clients: bootstrap plus the passthrough (TLS/SASL), minus producer tuning."""
    producer_only = {"linger.ms", "compression.type", "batch.num.messages", "queue.buffering.max.messages",
                     "partitioner", "message.timeout.ms", "transaction.timeout.ms", "batch.size",
                     "message.max.bytes", "queue.buffering.max.kbytes", "retries", "retry.backoff.ms"}
    cfg: dict[str, Any] = {k: v for k, v in settings.kafka_extra.items() if k not in producer_only}
    cfg["bootstrap.servers"] = settings.bootstrap_servers
    cfg.setdefault("log_level", 3)
    return cfg


class KafkaTransport:
    """One shard's transactional producer. Never waits per message: deliveries are collected at flush()."""

    def __init__(self, settings: RelaySettings, shard: int) -> None:
        self._timeout = settings.kafka_timeout_s
        self._checkpoint_topic = settings.checkpoint_topic
        self._tid = settings.transactional_id(shard)
        self._config = producer_config(settings, shard)
        self._producer = Producer(self._config, logger=_client_log)
        self._raw: list[tuple[int, KafkaError | None, int, int]] = []
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
        A replaced producer whose request still lands later only fences this one; probe_end() then fails as
        fenced and the worker initialises again, so the race costs time, never correctness.
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

    def read_last(self, shard: int, end: int) -> bytes | None:
        """The value of the last record with the shard's key below offset ``end``, read under read_committed
        backwards from ``end`` in growing windows (64, 512, 4096 … records), never the whole topic.

        ``end`` must come from a produce acknowledgement (``Transport.probe_end``), never from a metadata query:
        ListOffsets answered ``-1001`` (OFFSET_INVALID) with no error while the partition's leader was down
        (reproduced: tests/faults/relay/test_checkpoint_leader_loss.py), and a reader that trusted it found no
        checkpoint and re-sent a committed batch. For the same reason an offset reset goes to the *earliest*
        offset: the reader may re-read, it never skips.
        """
        tp = TopicPartition(self._topic, self.partition_for(shard))
        key = str(shard).encode()
        window = 64
        consumer = _Consumer({**client_config(self._settings), "group.id": f"{self._settings.transactional_id_prefix}"
                              "-checkpoint-reader", "isolation.level": "read_committed",
                              "auto.offset.reset": "earliest", "enable.auto.commit": False,
                              "enable.partition.eof": True,
                              # Recovery sits on the failover path. With the default 500 ms the broker held an
                              # empty fetch (a window of aborted probes) that long; measured 1.0 s per takeover.
                              "fetch.wait.max.ms": 10}, logger=_client_log)
        try:
            while True:
                start = max(0, end - window)
                found = self._scan(consumer, tp, start, end, key)
                if found is not None or start == 0:
                    return found
                window *= 8
        finally:
            consumer.close()

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


def probe(settings: RelaySettings, timeout: float = 10.0) -> int:
    """Check that a broker answers; returns the number of brokers. Raises KafkaUnavailableError."""
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**client_config(settings), "error_cb": errors.append}
    admin = AdminClient(conf, logger=_client_log)
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0.5)
        # A wrong password or CA surfaces only through error_cb; say that rather than "transport failure".
        cause = next((e.str() for e in errors
                      if e.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL)), exc.args[0].str())
        raise KafkaUnavailableError(
            f"Kafka at {settings.bootstrap_servers} did not answer within {timeout:.0f}s: {cause}"
        ) from exc
    return len(md.brokers)


# --- start-up validation (messages: relay/startup.py) ---------------------------------------------------------
# librdkafka checks its settings when a client is constructed, which needs no broker. Unchecked, a value it refuses
# surfaced as a traceback (exit 1) or, for a producer-only setting, as every shard worker failing forever.
_quiet = logging.getLogger("relay.kafka.validate")  # construction starts connecting: not worth a line here
_quiet.propagate = False
_quiet.addHandler(logging.NullHandler())


def validate_config(settings: RelaySettings) -> None:
    """Construct, once, each kind of client the relay uses with its exact settings; ConfigError if refused."""
    for make, cfg in ((Producer, producer_config(settings, 0)), (AdminClient, client_config(settings)),
                      (_Consumer, {**client_config(settings), "group.id": "outbox-relay-config-check"})):
        try:
            make(cfg, logger=_quiet)
        except KafkaException as exc:
            raise startup.kafka_config_error(settings.kafka_extra, exc.args[0].str(), _refused_alone) from exc


def _refused_alone(key: str, value: str) -> bool:
    """A bad name or value is refused even alone; a bad combination only by the client's constructor."""
    try:
        Producer({key: value}, logger=_quiet)
    except KafkaException as exc:
        return not exc.args[0].str().startswith("Failed to create")
    return False


# Refusals of the checkpoint topic's creation that only a setting (or a grant) fixes: retrying never helps.
_TOPIC_REFUSALS = {
    KafkaError.INVALID_REPLICATION_FACTOR: "replication", KafkaError.TOPIC_EXCEPTION: "name",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "denied", KafkaError.CLUSTER_AUTHORIZATION_FAILED: "denied",
    KafkaError.POLICY_VIOLATION: "policy", KafkaError.INVALID_PARTITIONS: "policy",
    KafkaError.INVALID_CONFIG: "policy", KafkaError.INVALID_REPLICA_ASSIGNMENT: "policy",
}


def open_checkpoint_log(settings: RelaySettings) -> KafkaCheckpointLog:
    """The checkpoint log, its topic created if missing. A refusal for a configuration reason is a ConfigError
    naming the variable; anything else stays a PublishError (Kafka unreachable)."""
    checkpoints = KafkaCheckpointLog(settings)
    try:
        checkpoints.ensure(settings.shards)
    except PublishError as exc:
        err = exc.__cause__.args[0] if isinstance(exc.__cause__, KafkaException) else None
        kind = _TOPIC_REFUSALS.get(err.code()) if err is not None else None
        if err is None or kind is None:
            raise
        raise startup.checkpoint_topic_refused(settings, kind, f"{err.name()}: {err.str()}") from exc
    return checkpoints
