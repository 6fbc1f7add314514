"""librdkafka settings and error translation, shared by every client of the relay (see relay/kafka/__init__.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from outbox.config import DEFAULT_MAX_RECORD_BYTES
from outbox.errors import FencedError, KafkaUnavailableError, PermanentPublishError, PublishError
from relay.config import RelaySettings

log = logging.getLogger("relay.kafka")
# librdkafka's own lines: a child logger, kept at WARNING by relay.logs unless debugging (ours stay at INFO).
_client_log = logging.getLogger("relay.kafka.client")

_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
# Errors no retry of the same record can clear: the record, its topic or the principal's right to the topic is
# at fault. This is the relay's reading of "non-retriable": librdkafka's retriable() flag is unset on many
# transient errors (transport, timeouts), and errors of the producer as a whole (its transactional id or
# cluster authorisation, transaction state) must stop the relay's work rather than dead-letter every row.
_PERMANENT = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.TOPIC_EXCEPTION, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION, KafkaError.POLICY_VIOLATION, KafkaError._INVALID_ARG,
    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
})
# The relay never sets a record's timestamp: librdkafka stamps it with the relay host's clock, so a broker that
# refuses it (Kafka 4 refuses times more than an hour ahead by default) is refusing the host's clock, not the row.
# Transient: retried (dead-lettering every row while the clock is off would be a mass false verdict).
_CLOCK_SKEW = frozenset({KafkaError.INVALID_TIMESTAMP})


@dataclass(frozen=True)
class TopicRefusal:
    """What one topic-level error code means where the relay meets it."""

    created: str | None  # refusing to create the checkpoint topic: startup.checkpoint_topic_refused's kind, or
    # None when a retry may succeed
    described: str | None  # in an event topic's metadata: why no record for it will ever be taken, or None


# The one table of topic refusals: the checkpoint topic's creation (relay.kafka.checkpoints) and an event topic's
# metadata (topic_refusal) both read it. Only a setting, a grant or a new topic fixes these; retrying never does.
TOPIC_REFUSALS = {
    KafkaError.UNKNOWN_TOPIC_OR_PART: TopicRefusal(None, "does not exist, and the broker does not create it on use "
                                                         "(auto.create.topics.enable=false): create the topic"),
    KafkaError.TOPIC_EXCEPTION: TopicRefusal("name", "is not a valid Kafka topic name"),
    KafkaError.TOPIC_AUTHORIZATION_FAILED: TopicRefusal("denied", "may not be described by this relay's principal: "
                                                                  "grant it DESCRIBE and WRITE on the topic"),
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: TopicRefusal("denied", None),
    KafkaError.INVALID_REPLICATION_FACTOR: TopicRefusal("replication", None),
    KafkaError.POLICY_VIOLATION: TopicRefusal("policy", None),
    KafkaError.INVALID_PARTITIONS: TopicRefusal("policy", None),
    KafkaError.INVALID_CONFIG: TopicRefusal("policy", None),
    KafkaError.INVALID_REPLICA_ASSIGNMENT: TopicRefusal("policy", None),
}
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
    if code in _CLOCK_SKEW:
        return KafkaUnavailableError(f"{text} (likely clock skew: the broker refuses the record timestamps this "
                                     "host's clock gives; check the relay host's time synchronisation)")
    if err.fatal():
        # Fatal producer errors cannot be cleared on this instance; the worker drops it and re-initialises,
        # which re-runs recovery, like a fencing.
        return FencedError(f"fatal producer error while {text}")
    return KafkaUnavailableError(text)


def topic_refusal(topic: str, err: KafkaError | None) -> str | None:
    """Why no record for ``topic`` will be accepted, from its metadata error; None when it may be (no error, or
    a transient one such as LEADER_NOT_AVAILABLE while it is being created)."""
    said = None if err is None or err.code() not in TOPIC_REFUSALS else TOPIC_REFUSALS[err.code()].described
    if err is None or said is None:
        return None
    return f"topic {topic!r} {said} ({err.name()}), then `outbox dlq retry` the row"


def _call(doing: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except KafkaException as exc:
        raise translate(exc.args[0], doing) from exc


def producer_config(settings: RelaySettings, shard: int, lane: int = 0) -> dict[str, Any]:
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
        # The writers' limit (records counted as Kafka counts them), not librdkafka's lower 1,000,000: a record
        # enqueue accepted must not be refused here. A user's OUTBOX_KAFKA_MESSAGE_MAX_BYTES still wins below;
        # writers must then keep OUTBOX_MAX_PAYLOAD_BYTES at or under it (docs/write-side.md).
        "message.max.bytes": DEFAULT_MAX_RECORD_BYTES,
    }
    cfg.update(settings.kafka_extra)
    cfg.update({"transactional.id": settings.transactional_id(shard, lane), "enable.idempotence": True, "acks": "all"})
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
