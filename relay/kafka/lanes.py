"""A shard's transactions alternating between two transactional producers (docs/decisions/017).

When a transaction commits, ``commit_transaction()`` returns once the coordinator has logged the decision; the
commit markers are then written to every partition of the transaction. Until they are, the coordinator answers
the *same* transactional id's next AddPartitionsToTxn with CONCURRENT_TRANSACTIONS, and librdkafka asks again
only after a fixed 20 ms. At 1,000 events/s over 8 shards that was 72 % of transactions (debug log, 2026-12-01),
the largest single share of a batch's flush. A second transactional id per shard has no such history: the
shard's transactions alternate between the two, so the next one starts while the last one's markers land (and
rarely waits: 2.7 % of transactions in the same run, when a batch outlasts the other id's markers).

Nothing else changes. Batches of a shard are still strictly sequential (the next is claimed after the last
mark), so checkpoints land on the checkpoint partition in batch order and the last one is still the only batch
in doubt. Every lane is initialised before the recovery probe, so the probe's offset lies above every
transaction either id ever ended. With ``OUTBOX_RELAY_PRODUCERS_PER_SHARD=1`` the second id is still
initialised on every (re)initialisation and then closed: a zombie that ran with 2 must be fenced on both.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from relay.config import RelaySettings
from relay.kafka.transport import KafkaTransport
from relay.ports import Delivery, OutRecord, Transport

LANE_IDS = 2  # transactional ids per shard that every takeover fences, whatever producers_per_shard says


def shard_transport(settings: RelaySettings, shard: int) -> LaneTransport:
    """The relay's transport for ``shard``: ``producers_per_shard`` lanes, every lane id fenced on init."""
    n = settings.producers_per_shard
    made: list[KafkaTransport] = []
    try:
        for lane in range(LANE_IDS):
            made.append(KafkaTransport(settings, shard, lane))
    except BaseException:
        for t in made:  # a producer built before the failure must not linger until garbage collection
            t.close()
        raise
    return LaneTransport(made[:n], fence_only=made[n:])


class LaneTransport:
    """``relay.ports.Transport`` over one or more producers of one shard; each ``begin()`` takes the next one."""

    def __init__(self, lanes: Sequence[Transport], fence_only: Sequence[Transport] = ()) -> None:
        if not lanes:
            raise ValueError("at least one lane")
        self._lanes = tuple(lanes)
        self._fence_only = tuple(fence_only)
        self._current = len(self._lanes) - 1  # the first begin() takes lane 0

    @property
    def current(self) -> int:
        """Index of the lane of the transaction in progress (or the last one)."""
        return self._current

    def init(self) -> None:
        # Fence-only producers first, closed at once: they exist to end a zombie's transaction on their id.
        for t in self._fence_only:
            try:
                t.init()
            finally:
                t.close()
        self._fence_only = ()
        for t in self._lanes:
            t.init()

    def topic_refusal(self, topic: str) -> str | None:
        return self._lanes[self._current].topic_refusal(topic)  # metadata: any lane's producer answers alike

    def leaderless(self, topics: Collection[str]) -> list[str]:
        return self._lanes[self._current].leaderless(topics)

    def begin(self) -> None:
        self._current = (self._current + 1) % len(self._lanes)
        self._lanes[self._current].begin()

    def send(self, record: OutRecord) -> None:
        self._lanes[self._current].send(record)

    def flush(self) -> list[Delivery]:
        return self._lanes[self._current].flush()

    def send_checkpoint(self, partition: int, key: bytes, value: bytes) -> None:
        self._lanes[self._current].send_checkpoint(partition, key, value)

    def commit(self) -> None:
        self._lanes[self._current].commit()

    def abort(self) -> None:
        self._lanes[self._current].abort()

    def probe_end(self, partition: int, key: bytes, value: bytes) -> int:
        # After init() of every lane, any lane's acknowledged offset bounds every transaction either id ended.
        # The probe is a transaction too: run it on the last lane, so the first batch (lane 0) does not wait for
        # the probe's abort markers.
        return self._lanes[-1].probe_end(partition, key, value)

    def close(self) -> None:
        for t in (*self._fence_only, *self._lanes):
            t.close()
