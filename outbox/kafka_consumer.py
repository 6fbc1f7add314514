"""The inbox's only contact with Kafka (the only ``confluent_kafka`` import in ``outbox/``).

A read_committed consumer with auto-commit *off* and offset storing off: offsets move only when
:meth:`KafkaConsumer.commit` is called, which :mod:`outbox.inbox` does after the database commit. librdkafka
errors are translated here, once, into :class:`~outbox.errors.ConsumerError` (``raise ... from exc``).

The :class:`ConsumerPort` protocol is what the inbox needs; tests may pass a fake.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from outbox.errors import ConsumerError
from outbox.extras import missing_extra

try:
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
except ModuleNotFoundError as exc:  # the core install has no Kafka client
    raise missing_extra(exc, "outbox.inbox (reading Kafka)", "inbox") from exc
from outbox.inbox_args import check_group, check_topics

log = logging.getLogger("outbox.inbox")

Position = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class KafkaRecord:
    """One record as read from Kafka: coordinates, key, value and headers (values as bytes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None


class ConsumerPort(Protocol):
    def poll_batch(self, max_records: int, timeout: float) -> list[KafkaRecord]: ...
    def commit(self, next_offsets: Mapping[Position, int]) -> None: ...
    def rewind(self, next_offsets: Mapping[Position, int]) -> None: ...
    def close(self) -> None: ...


def _bytes(v: object) -> bytes | None:
    if v is None:
        return None
    return v if isinstance(v, bytes) else str(v).encode()


def _raise(doing: str, exc: KafkaException) -> ConsumerError:
    err = exc.args[0] if exc.args else None
    name = err.name() if isinstance(err, KafkaError) else type(exc).__name__
    return ConsumerError(f"Kafka failed while {doing}: {name}: {exc}")


class KafkaConsumer:
    """A subscribed consumer of ``topics`` in ``group``: read_committed, manual offset commits."""

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str],
                 config: Mapping[str, Any] | None = None) -> None:
        group, names = check_group(group), check_topics(topics)  # a str would subscribe to its characters
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            # Only committed Kafka transactions: aborted relay batches must never be acknowledged.
            "isolation.level": "read_committed",
            # Offsets move only after the database commit (outbox.inbox), never on a timer.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "log_level": 3,
            **(config or {}),
        }
        try:
            self._c = Consumer(conf)
            self._c.subscribe(names)
        except KafkaException as exc:
            raise _raise(f"subscribing group {group!r} to {names}", exc) from exc
        self.group = group

    def poll_batch(self, max_records: int, timeout: float) -> list[KafkaRecord]:
        """Up to ``max_records`` records in partition order; waits at most ``timeout`` seconds for the first."""
        try:
            msgs = self._c.consume(num_messages=max_records, timeout=timeout)
        except KafkaException as exc:
            raise _raise("polling", exc) from exc
        out: list[KafkaRecord] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise ConsumerError(f"fatal Kafka consumer error: {err.name()}: {err.str()}")
                # Transient (transport, rebalance in progress): librdkafka recovers by itself.
                log.warning("kafka consumer: %s: %s", err.name(), err.str())
                continue
            ts_type, ts = m.timestamp()
            out.append(KafkaRecord(
                topic=str(m.topic()), partition=int(m.partition() or 0), offset=int(m.offset() or 0),
                key=_bytes(m.key()), value=_bytes(m.value()),
                headers=tuple((str(h[0]), _bytes(h[1]) or b"") for h in (m.headers() or ())),
                timestamp_ms=ts if ts_type != 0 else None,
            ))
        return out

    def commit(self, next_offsets: Mapping[Position, int]) -> None:
        """Synchronously commit ``next_offsets`` (the offset of the next record to read, per partition)."""
        if not next_offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            self._c.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise _raise("committing offsets", exc) from exc

    def rewind(self, next_offsets: Mapping[Position, int]) -> None:
        """Re-read each partition from the given offset (records fetched but not handled)."""
        for (t, p), o in next_offsets.items():
            try:
                self._c.seek(TopicPartition(t, p, o))
            except KafkaException as exc:
                # The partition was revoked meanwhile: its new owner resumes from the committed offset.
                log.info("kafka consumer: could not rewind %s[%d] to %d: %s", t, p, o, exc)

    def committed(self, partitions: Sequence[Position], timeout: float = 10) -> dict[Position, int]:
        """The group's committed offsets (-1001 when none), for diagnostics and tests."""
        try:
            res = self._c.committed([TopicPartition(t, p) for t, p in partitions], timeout=timeout)
        except KafkaException as exc:
            raise _raise("reading committed offsets", exc) from exc
        return {(tp.topic, tp.partition): tp.offset for tp in res}

    def close(self) -> None:
        try:
            self._c.close()
        except (KafkaException, RuntimeError) as exc:
            log.info("kafka consumer: close: %s", exc)


class AckPublisher:
    """Publishes acknowledgements to an ack topic, for auditors who cannot reach the consumer's database.

    Idempotent producer, sent after the database commit: at-least-once, so the reader deduplicates on (group,
    event id); a copy from another source position means a duplicate, as in the inbox. The record key is
    (group, topic, event key), so one key's acknowledgements stay in one partition, in processing order, and the
    reader can check per-key order.
    """

    def __init__(self, bootstrap: str, topic: str, config: Mapping[str, Any] | None = None) -> None:
        self.topic = topic
        try:
            self._p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                "linger.ms": 20, "log_level": 3, **(config or {})})
        except KafkaException as exc:
            raise _raise("creating the ack producer", exc) from exc

    def publish(self, acks: Sequence[Mapping[str, Any]]) -> None:
        try:
            for a in acks:
                key = f"{a['consumer_group']}\x00{a['topic']}\x00{a['key'] if a['key'] is not None else a['event_id']}"
                self._p.produce(self.topic, key=key.encode(),
                                value=json.dumps(a, sort_keys=True, default=str).encode())
            left = self._p.flush(30)
        except KafkaException as exc:
            raise _raise(f"publishing acknowledgements to {self.topic!r}", exc) from exc
        if left:
            raise ConsumerError(f"{left} acknowledgements to {self.topic!r} not delivered within 30 s")

    def close(self) -> None:
        self._p.flush(10)


def iter_acks(bootstrap: str, topic: str, timeout: float = 60) -> Iterator[list[dict[str, Any]]]:
    """Every acknowledgement on ``topic`` up to its current end (read_committed), in batches (bounded memory)."""
    import time
    import uuid

    from confluent_kafka import OFFSET_BEGINNING

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"outbox-audit-{uuid.uuid4().hex[:8]}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "log_level": 3})
    deadline = time.monotonic() + timeout
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise ConsumerError(f"ack topic {topic!r} does not exist on {bootstrap}")
        ends: dict[int, int] = {}
        for p in md.topics[topic].partitions:
            _lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if hi < 0:  # an invalid answer (e.g. -1001 with the leader gone) must not read as "empty partition"
                raise ConsumerError(f"ack topic {topic!r} partition {p}: no valid end offset ({hi}); retry")
            if hi > 0:
                ends[p] = hi
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        pos: dict[int, int] = {}
        while any(pos.get(p, -1) + 1 < e for p, e in ends.items()):
            if time.monotonic() > deadline:
                raise ConsumerError(f"timed out after {timeout:.0f}s reading ack topic {topic!r}")
            batch = []
            for m in c.consume(500, 1.0):
                if m.error() is None:
                    pos[int(m.partition() or 0)] = int(m.offset() or 0)
                    batch.append(json.loads(m.value() or b"{}"))
            if batch:
                yield batch
    except KafkaException as exc:
        raise _raise(f"reading ack topic {topic!r}", exc) from exc
    finally:
        c.close()
