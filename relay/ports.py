"""The two narrow seams the relay's logic talks through, so it can run against Kafka or a fake.

* :class:`Transport`: one transactional producer for one shard (``relay.kafka.KafkaTransport``).
* :class:`CheckpointLog`: the compacted topic of per-shard checkpoints (``relay.kafka.KafkaCheckpointLog``).

Both raise only :mod:`outbox.errors` (``KafkaUnavailableError``, ``FencedError``, ``PermanentPublishError``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from outbox.errors import PublishError


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One Kafka record to produce; ``ref`` is the outbox row id it came from."""

    ref: int
    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """The broker's answer for one record: where it landed, or why not."""

    ref: int
    partition: int
    offset: int
    error: PublishError | None = None


class Transport(Protocol):
    """A transactional producer bound to one shard's stable ``transactional.id``."""

    def init(self) -> None:
        """init_transactions(): fences any older producer with the same id and aborts its open transaction."""

    def topic_refusal(self, topic: str) -> str | None:
        """Why Kafka will never take records for ``topic`` (it does not exist and the broker does not create it,
        its name is invalid, the principal may not describe it), from the broker's metadata; None when it may.
        Called outside any transaction. A topic found usable is remembered (no request per batch); a refusal
        is never remembered here, so asking again re-checks (a topic created since is picked up). Raises
        KafkaUnavailableError when the metadata cannot be read."""
        ...

    def leaderless(self, topics: Collection[str]) -> list[str]:
        """The partitions of ``topics`` that have no leader now (``"<topic>-<partition>"``), from the metadata;
        topics that do not exist or are refused are left out. Called before init(): see ShardWorker._open.
        Raises KafkaUnavailableError when the metadata cannot be read."""
        ...

    def begin(self) -> None: ...

    def send(self, record: OutRecord) -> None:
        """Queue one record (never waits for the broker). Raises PermanentPublishError if the client already
        knows the broker would refuse it (too large, invalid topic)."""

    def flush(self) -> list[Delivery]:
        """Wait until every queued record is acknowledged or failed; return the deliveries since last flush.

        Raises PermanentPublishError when the broker refused the transaction as a whole for a reason no retry
        changes (e.g. TOPIC_AUTHORIZATION_FAILED when a partition is added to it): no record is to blame, the
        transaction must be aborted, and the caller finds the topic by publishing topics apart."""
        ...

    def send_checkpoint(self, partition: int, key: bytes, value: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None:
        """Abort the open transaction. If that fails the transport is unusable: close it and make a new one."""

    def probe_end(self, partition: int, key: bytes, value: bytes) -> int:
        """After init(): produce one record to ``partition`` in a transaction of its own, abort it, and return
        the offset the broker gave it. Every transaction of this id that ended before init() lies below that
        offset, so recovery reads the checkpoint partition up to it: an end bound acknowledged by the partition's
        leader itself, where a metadata query (ListOffsets) can answer a wrong offset without an error."""
        ...

    def close(self) -> None: ...


class CheckpointLog(Protocol):
    def ensure(self, shards: int) -> int:
        """Create the compacted checkpoint topic if missing; return its partition count."""
        ...

    def partition_for(self, shard: int) -> int: ...

    def read_last(self, shard: int, end: int, key: bytes) -> bytes | None:
        """The value of the last committed record with ``key`` in the shard's partition below offset ``end``
        (from ``probe_end``), or None if it has none. Raises KafkaUnavailableError rather than answer from a
        partial read."""
        ...

    def event_ids_at(self, positions: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], str]:
        """The event id header of the committed record at each (topic, partition, offset) that has one."""
        ...
