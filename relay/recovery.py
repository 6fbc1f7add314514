"""Taking over a shard's transactional ids: wait until the partitions its open transaction may hold have leaders,
fence, then find the shard's last committed batch in the checkpoint partition and mark it (docs/decisions/010,
018). The shard worker (``relay.worker``) calls it each time it (re)initialises its producers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from outbox.errors import KafkaUnavailableError, OutboxCollisionError, PermanentPublishError
from outbox.store.relay import Mark, RelayStore
from relay import checkpoint, identity
from relay.config import RelaySettings
from relay.metrics import Metrics
from relay.ports import CheckpointLog, Transport

log = logging.getLogger("relay.worker")  # the shard's story in one logger, as before the split


class ShardRecovery:
    """One shard worker's takeover steps, at its lease ``epoch``."""

    def __init__(self, shard: int, epoch: int, *, settings: RelaySettings, store: RelayStore,
                 checkpoints: CheckpointLog, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.shard, self.epoch, self.s = shard, epoch, settings
        self.owner = settings.instance_id
        self._store, self._checkpoints, self._metrics, self._clock = store, checkpoints, metrics, clock
        self._identity: identity.OutboxIdentity | None = None

    def await_leaders(self, t: Transport, recent_topics: Iterable[str]) -> None:
        """Before init() fences the shard's previous producer, which aborts its open transaction: every partition
        that transaction may hold records on must have a leader.

        Kafka's transaction coordinator drops the marker of a partition it finds no leader for ("likely deleted")
        and records the transaction as ended. Its records there stay undecided until this transactional id's next
        transaction on that partition ends, and take that outcome: an aborted batch, re-sent since, became visible
        beside its copy (reproduced against Kafka 4.3.1: tests/faults/relay/test_leaderless_partitions.py). So
        wait, like an outage, until the leaders are back. The open transaction's topics are among those of the
        shard's first pending rows (its rows stay pending until marked) and ``recent_topics``, those of the
        worker's last transaction."""
        topics = {self.s.checkpoint_topic, *recent_topics,
                  *self._store.pending_topics(self.shard, self.s.batch_size)}
        missing = t.leaderless(sorted(topics))
        if missing:
            raise KafkaUnavailableError(
                f"shard {self.shard} waits to initialise its transactions until these partitions have a leader "
                f"again: {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''} (Kafka would drop the abort "
                "marker of the shard's unfinished transaction there: docs/operations.md#partitions-without-a-leader)")

    def recover(self, t: Transport, began: float) -> int | None:
        """After ``t.init()`` (begun at ``began``): mark the shard's last committed batch from its checkpoint.
        Returns the rows marked now, or None when the shard has no checkpoint."""
        writer = self.writer()
        partition = self._checkpoints.partition_for(self.shard)
        inited = self._clock()
        end = t.probe_end(partition, writer.opening_key, checkpoint.probe(self.shard, self.epoch))
        value = self._checkpoints.read_last(self.shard, end, writer.key)
        legacy = value is None
        if legacy:  # no checkpoint of this version yet: the last one may predate outbox identities
            value = self._checkpoints.read_last(self.shard, end, checkpoint.legacy_key_for(self.shard))
        # Where a takeover's time goes (init fences the old producer; probe + read find its last batch): the
        # failover budget is spent here, so every recovery line carries it.
        took = {"init_ms": round((inited - began) * 1000), "read_ms": round((self._clock() - inited) * 1000)}
        if value is None:
            log.info("recovery: the shard has no checkpoint", extra={"shard": self.shard, "below_offset": end, **took})
            return None
        cp = checkpoint.decode(value)
        marks = self._legacy_marks(cp) if legacy else self._own_marks(cp, writer)
        n = self._store.mark_published(self.shard, self.owner, self.epoch, marks) if marks else 0
        if n:
            self._metrics.recovered.inc(n)
            self._metrics.published.labels(str(self.shard)).inc(n)
            log.info("recovered the last committed batch without re-sending",
                     extra={"shard": self.shard, "rows": n, "from_epoch": cp.epoch, "from_owner": cp.owner,
                            "checkpoint_version": checkpoint.LEGACY_VERSION if legacy else checkpoint.VERSION,
                            **took})
        else:  # one line per (re)initialisation: an audit trail of what recovery saw, also when all is settled
            log.info("recovery: the last committed batch was already marked",
                     extra={"shard": self.shard, "rows": len(cp.marks), "from_epoch": cp.epoch, "below_offset": end,
                            **took})
        return n

    def writer(self) -> checkpoint.Writer:
        """Who writes this shard's checkpoints (the outbox's identity, read once)."""
        if self._identity is None:  # one query per worker: the identity never changes while the process runs
            self._identity = identity.read(self.s, self._store)
        return checkpoint.Writer(self._identity, self.s.transactional_id(self.shard), self.owner)

    def _own_marks(self, cp: checkpoint.Checkpoint, writer: checkpoint.Writer) -> tuple[Mark, ...]:
        """The checkpoint's marks if this outbox wrote it; another outbox's record under our key means two
        outboxes share transactional ids: acting on it would mark our rows with its offsets (a silent loss)."""
        if cp.outbox == writer.outbox.id:
            return cp.marks
        raise OutboxCollisionError(
            f"the checkpoint of shard {self.shard} under transactional id {writer.transactional_id!r} (topic "
            f"{self.s.checkpoint_topic!r}) was written by another outbox, {cp.origin}, while this relay publishes "
            f"outbox {writer.outbox.describe()}: two outboxes share OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX="
            f"{self.s.id_prefix!r}. Give each outbox its own prefix, or unset it on both (the default is derived "
            f"from the outbox); nothing was marked")

    def _legacy_marks(self, cp: checkpoint.Checkpoint) -> tuple[Mark, ...]:
        """A version-1 checkpoint names no outbox, and every outbox of the cluster wrote that key: act only on
        the marks of still-pending rows whose Kafka record at that position carries the row's own event id."""
        pending = self._store.pending_events([m.id for m in cp.marks])
        wanted = [m for m in cp.marks if m.id in pending]
        if not wanted:
            return ()
        try:
            found = self._checkpoints.event_ids_at([(pending[m.id][0], m.partition, m.offset) for m in wanted])
        except PermanentPublishError as exc:
            # Not allowed to read the event topics (an authorizer without READ on them): waiting would stall the
            # shard for good, so the record goes unchecked and unused; its rows are sent again, once.
            log.error("recovery: cannot check a checkpoint of the previous format against Kafka; its rows are "  # noqa: TRY400
                      "treated as unpublished and may be sent twice (grant the relay READ on its topics for the "
                      "upgrade: docs/operations.md, \"Upgrading from a release without outbox identities\")",
                      extra={"shard": self.shard, "rows": len(wanted), "error": str(exc)[:300]})
            return ()
        ours = tuple(m for m in wanted if found.get((pending[m.id][0], m.partition, m.offset)) == pending[m.id][1])
        if len(ours) != len(wanted):
            log.warning("recovery: a checkpoint of the previous format names rows this outbox has not published "
                        "at positions where Kafka holds other events: it belongs to another outbox and is ignored",
                        extra={"shard": self.shard, "rows": len(wanted), "matching": len(ours)})
            return ()
        return ours
