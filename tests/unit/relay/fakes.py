"""In-memory stand-ins for the Kafka seam (``relay.ports``), programmable to fail like librdkafka does."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

from outbox.errors import FencedError, KafkaUnavailableError, PermanentPublishError, PublishError
from outbox.store.relay import PendingRow
from relay.ports import Delivery, OutRecord


def row(i: int, key: str | None = "a", topic: str = "t", seq: int | None = None, size: int = 10) -> PendingRow:
    return PendingRow(id=i, event_id=uuid.uuid4(), topic=topic, key=None if key is None else key.encode(),
                      payload=b"x" * size, content_type="application/octet-stream", type="t.e", source="urn:s",
                      subject=None, time=datetime(2026, 1, 1, tzinfo=UTC), headers=[{"name": "h", "value": "v"}],
                      traceparent=None, key_seq=None if key is None else (seq or i), attempts=0)


@dataclass
class FakeKafka:
    """The broker: committed transactions, and what to refuse."""

    committed: list[list[OutRecord]] = field(default_factory=list)
    checkpoints: dict[bytes, list[bytes]] = field(default_factory=dict)  # key → committed values, in order
    sync_refuse: set[int] = field(default_factory=set)  # refs refused by the client at send()
    broker_refuse: set[int] = field(default_factory=set)  # refs whose whole record batch the broker refuses
    missing_topics: set[str] = field(default_factory=set)  # not in the metadata (auto-create off)
    leaderless: set[str] = field(default_factory=set)  # "<topic>-<partition>" with no leader now
    denied_topics: set[str] = field(default_factory=set)  # AddPartitionsToTxn refused: the whole transaction fails
    checkpoint_denied: bool = False  # WRITE on the checkpoint topic revoked: every transaction is refused
    fail_abort: list[PublishError] = field(default_factory=list)  # raised by the next aborts, in order
    metadata_requests: int = 0
    fail_commit: list[PublishError] = field(default_factory=list)  # raised by the next commits, in order
    fail_init: list[PublishError] = field(default_factory=list)
    fail_probe: list[PublishError] = field(default_factory=list)  # raised by the next recovery probes, in order
    probe_failures_after_lost_ack: int = 0  # that many probes fail right after a "lost-ack" commit
    epochs: dict[int, int] = field(default_factory=dict)  # current producer epoch per transactional id
    inits: int = 0
    probes: int = 0  # recovery probes (produced and aborted: never visible)

    def published(self) -> list[int]:
        return [r.ref for txn in self.committed for r in txn]


class FakeTransport:
    def __init__(self, kafka: FakeKafka, tid: int = 0) -> None:
        self.k = kafka
        self.tid = tid
        self.open: list[OutRecord] | None = None
        self.cp: list[tuple[bytes, bytes]] = []
        self.my_epoch = -1
        self.closed = False

    def _fenced(self) -> None:
        if self.my_epoch != self.k.epochs.get(self.tid, 0):
            raise FencedError("fenced (fake)")

    def init(self) -> None:
        if self.k.fail_init:
            raise self.k.fail_init.pop(0)
        self.k.epochs[self.tid] = self.my_epoch = self.k.epochs.get(self.tid, 0) + 1
        self.k.inits += 1

    def topic_refusal(self, topic: str) -> str | None:
        self.k.metadata_requests += 1
        return f"topic {topic!r} does not exist (fake)" if topic in self.k.missing_topics else None

    def leaderless(self, topics: Collection[str]) -> list[str]:
        return sorted(p for p in self.k.leaderless if p.rsplit("-", 1)[0] in topics)

    def begin(self) -> None:
        self._fenced()
        assert self.open is None, "begin inside an open transaction"
        self.open, self.cp = [], []

    def send(self, record: OutRecord) -> None:
        assert self.open is not None
        if record.ref in self.k.sync_refuse:
            raise PermanentPublishError(f"MSG_SIZE_TOO_LARGE (fake) row {record.ref}")
        self.open.append(record)

    def flush(self) -> list[Delivery]:
        assert self.open is not None
        denied = sorted({r.topic for r in self.open} & self.k.denied_topics)
        # Like librdkafka: every record purged, the cause only in the transaction's error.
        if denied or (self.k.checkpoint_denied and self.cp):
            raise PermanentPublishError("the transaction: TOPIC_AUTHORIZATION_FAILED: Failed to add partition(s) "
                                        "to transaction (fake)")
        # One record batch per topic here: a refused record takes its batch-mates down with it.
        bad_topics = {r.topic for r in self.open if r.ref in self.k.broker_refuse}
        out = []
        for off, r in enumerate(self.open):
            err = PermanentPublishError("MSG_SIZE_TOO_LARGE (broker, fake)") if r.topic in bad_topics else None
            out.append(Delivery(r.ref, 0, off, err))
        return out

    def send_checkpoint(self, partition: int, key: bytes, value: bytes) -> None:
        self.cp.append((key, value))

    def commit(self) -> None:
        self._fenced()
        assert self.open is not None
        if self.k.fail_commit:
            e = self.k.fail_commit.pop(0)
            if not isinstance(e, KafkaUnavailableError) or "lost-ack" not in str(e):
                self.open = None
                raise e
            # "lost-ack": the commit happened, but the client never heard back
            self._do_commit()
            self.k.fail_probe += [KafkaUnavailableError("probe not acknowledged (fake)")] * \
                self.k.probe_failures_after_lost_ack
            raise e
        self._do_commit()

    def _do_commit(self) -> None:
        assert self.open is not None
        self.k.committed.append(self.open)
        for key, v in self.cp:
            self.k.checkpoints.setdefault(key, []).append(v)
        self.open = None

    def abort(self) -> None:
        self.open = None
        if self.k.fail_abort:
            raise self.k.fail_abort.pop(0)

    def probe_end(self, partition: int, key: bytes, value: bytes) -> int:
        self._fenced()
        if self.k.fail_probe:
            raise self.k.fail_probe.pop(0)
        if self.k.checkpoint_denied:
            raise PermanentPublishError("producing the recovery probe: TOPIC_AUTHORIZATION_FAILED (fake)")
        self.k.probes += 1
        return sum(len(v) for v in self.k.checkpoints.values()) + self.k.probes

    def close(self) -> None:
        self.closed = True


class FakeCheckpointLog:
    def __init__(self, kafka: FakeKafka, tid: int = 0) -> None:
        self.k = kafka
        self.tid = tid

    def ensure(self, shards: int) -> int:
        return shards

    def partition_for(self, shard: int) -> int:
        return shard

    def read_last(self, shard: int, end: int, key: bytes) -> bytes | None:
        # The last checkpoint in commit order, where the real reader takes the highest offset below `end`: the
        # two agree only because a shard's batches never overlap. Checkpoint-order bugs across a shard's two
        # producers (ADR 017) are the integration and fault tests' to catch, not this fake's.
        got = self.k.checkpoints.get(key)  # the exact key, like the real reader
        return got[-1] if got else None

    def event_ids_at(self, positions: object) -> dict[tuple[str, int, int], str]:
        return {}  # the fake broker keeps no positions: a previous-format checkpoint never verifies here
