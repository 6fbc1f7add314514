"""One shard's publishing loop: ``run_once() -> Result`` (tests call it directly) plus a thin ``run(stop)``.

Per batch: claim (DB) → one Kafka transaction with the events and a checkpoint (``relay.publish``) → mark (DB).
The next batch is claimed only after the mark commits, so only the last batch of a shard can be in doubt, and
the checkpoint of that batch settles it. Whenever the producer is (re)initialised, by taking the shard over or
after any Kafka error, ``init_transactions`` fences the previous producer and aborts its open transaction, and
recovery marks the last committed checkpoint's rows published without sending them again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

import tenacity

from outbox.config import MAX_SHARDS
from outbox.errors import (
    DatabaseUnavailableError,
    FencedError,
    KafkaUnavailableError,
    LeaseLostError,
    OutboxCollisionError,
    PermanentPublishError,
    PublishError,
)
from outbox.store.relay import Mark, PendingRow, RelayStore
from relay import tracing
from relay.config import RelaySettings
from relay.floor import ClaimFloor
from relay.hooks import NO_HOOKS, Hooks, InFlight, Step
from relay.metrics import Metrics
from relay.ports import CheckpointLog, Transport
from relay.publish import Published, TopicGate, choose, publish_batch
from relay.records import ERROR_CLASS as UNDECODABLE
from relay.records import first_of_each_key, undecodable_reason
from relay.recovery import ShardRecovery

log = logging.getLogger("relay.worker")
TRANSIENT = (KafkaUnavailableError, DatabaseUnavailableError)
# Claims per round while refused topics' rows fill them, each skipping the topics refused so far: a shard's other
# rows flow even behind the backlogs of that many refused topics at once (a further one waits a round).
MAX_CLAIMS = 4
MISPLACED_EVERY_S = 10.0  # how often shard 0's worker looks for rows with a shard no relay has


@dataclass(frozen=True)
class Result:
    claimed: int = 0
    published: int = 0
    refused: int = 0
    dead_lettered: int = 0
    full: bool = False
    waiting: int = 0  # claimed rows left out because their topic is refused and not due for a re-check

    @property
    def idle(self) -> bool:
        """Nothing to do now: nothing claimed, or every claimed row waits for its topic's next check (the loop
        then sleeps as when idle instead of claiming the same rows back to back)."""
        return self.claimed in (0, self.waiting)


class Exit(Enum):
    STOPPED = "stopped"  # asked to stop (shutdown or rebalance)
    LEASE_LOST = "lease_lost"  # another instance owns the shard now
    COLLISION = "collision"  # another outbox's checkpoint under our ids: the process must stop (exit 3)


class ShardWorker:
    def __init__(self, shard: int, epoch: int, *, settings: RelaySettings, store: RelayStore,
                 transport_factory: Callable[[int], Transport], checkpoints: CheckpointLog,
                 metrics: Metrics, hooks: Hooks = NO_HOOKS, slots: threading.Semaphore | None = None,
                 floor: ClaimFloor | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.shard, self.epoch, self.s = shard, epoch, settings
        self.owner = settings.instance_id
        self._store, self._factory, self._checkpoints = store, transport_factory, checkpoints
        self._metrics, self._hooks, self._clock = metrics, hooks, clock
        self._transport: Transport | None = None
        self._unmarked: tuple[Mark, ...] = ()
        self.fatal: OutboxCollisionError | None = None  # why the worker stopped the process (Exit.COLLISION)
        self._suspects: dict[int, str] = {}
        self._suspect_topics: dict[str, str] = {}  # topics of a transaction refused as a whole (relay.publish)
        self._recent_topics: frozenset[str] = frozenset()  # the last transaction's (ShardRecovery.await_leaders)
        self._isolating = False  # whose turn it is while there are suspects: theirs (True) or the others'
        self._gate = TopicGate(settings.retry_max_s, settings.retry_initial_s, clock)
        self._misplaced_due = 0.0  # shard 0 only: when to look for misplaced rows next
        self._label = str(shard)
        self._recovery = ShardRecovery(shard, epoch, settings=settings, store=store, checkpoints=checkpoints,
                                       metrics=metrics, clock=clock)
        # Shared by the process's workers: how many may claim and produce at once (memory and GIL bound);
        # the waits (flush, commit, mark) happen outside it, so shards still overlap their I/O.
        self._slots = slots or threading.Semaphore(1)
        self._woken = threading.Event()
        self._floor = floor or ClaimFloor(settings.claim_floor)
        self.idle = False  # in an idle wait (read by the waker's thread: a plain bool is enough)

    @property
    def claim_floor(self) -> int:
        """The id at or below which this worker's claims no longer look (read by the stats thread)."""
        return self._floor.floor

    def wake(self) -> None:
        """New rows may be pending (or a stop is asked): end the idle wait now. Thread-safe."""
        self._woken.set()

    # --- lifecycle ---------------------------------------------------------------------------------------
    def _open(self) -> Transport:
        """(Re)initialise the producer (fencing any other) and recover the shard's last committed batch."""
        if self._transport is not None:
            return self._transport
        t = self._factory(self.shard)
        began = self._clock()
        try:
            self._recovery.await_leaders(t, self._recent_topics)
            t.init()
            if self._recovery.recover(t, began) is not None:
                self._unmarked = ()  # the last committed batch, marked now if it was not
        except PermanentPublishError as exc:
            t.close()
            # Refused for good before any row was sent (the checkpoint topic denied, say): no row to charge, and
            # only an operator fixes it, so it is retried like an outage and says what to grant.
            raise KafkaUnavailableError(
                f"shard {self.shard} cannot start its transactions: {exc} (the relay needs Write on the "
                f"checkpoint topic {self.s.checkpoint_topic!r} and on its transactional ids: docs/security.md)"
            ) from exc
        except BaseException:
            t.close()
            raise
        self._transport = t
        return t

    def _drop_transport(self) -> None:
        t, self._transport = self._transport, None
        if t is not None:
            try:
                t.close()
            except PublishError:
                log.debug("closing a failed producer failed too", exc_info=True)

    def close(self) -> None:
        self._drop_transport()

    # --- one round ---------------------------------------------------------------------------------------
    def run_once(self) -> Result:
        """Claim, publish and mark one batch of this shard. Raises the tree's errors; never loses a row."""
        transport = self._open()
        if self._unmarked:
            self._mark(self._unmarked)
        swept = self._dead_letter_misplaced()
        started = self._clock()
        self._slots.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._slots.release()

        try:
            rows, snap = self._store.claim_above(self.shard, self.s.batch_size, *self._floor.bound())
            claimed_at = self._clock()
            if not rows:
                # Nothing pending: any suspect was published or dead-lettered meanwhile.
                self._suspects.clear()
                self._suspect_topics.clear()
                return Result(dead_lettered=swept)
            # Only this first claim feeds the floor: a full claim caps it at its last id (relay/floor.py), so
            # the claims below, which skip refused topics, can never make it pass one of their rows.
            self._floor.claimed(rows[-1].id, len(rows), self.s.batch_size, snap)
            claimed_ids = {r.id: None for r in rows}
            full = len(rows) >= self.s.batch_size
            self._hooks.batch_started()
            refused_topics: dict[int, str] = {}
            undecodable: dict[int, str] = {}
            waiting: set[int] = set()
            skip: set[str] = set()
            for claims in range(1, MAX_CLAIMS + 1):
                rows, gated = self._screen(transport, rows, refused_topics, undecodable, waiting)
                skip.update(gated)
                if not gated or not full or claims == MAX_CLAIMS:
                    break
                # A full claim with a refused topic's rows kept out: the rest of the shard may be behind them.
                # Claim again without the refused topics (whole topics, so whole keys: per-key order holds);
                # this claim supersedes the rows kept from the last one.
                rows.clear()
                rows, _ = self._store.claim_above(self.shard, self.s.batch_size, *self._floor.bound(),
                                                  skip_topics=sorted(skip))
                claimed_ids.update((r.id, None) for r in rows)
                full = len(rows) >= self.s.batch_size
            claimed = len(claimed_ids)
            present = {r.topic for r in rows}
            for t in [t for t in self._suspect_topics if t not in present]:
                del self._suspect_topics[t]  # none of its rows pending any more (dead-lettered, held)
            batch = choose(rows, self._suspects, self._suspect_topics, self._isolating)
            if batch is not rows:
                self._isolating = not self._isolating
                rows.clear()
            batch_len = len(batch)
            if batch:
                self._recent_topics = frozenset(r.topic for r in batch)
            topics = {r.id: r.topic for r in batch} if self._suspect_topics else {}
            in_flight = self._in_flight(r.id for r in batch)  # before publish_batch consumes the list
            self._hooks.at(Step.BEFORE_PRODUCE, in_flight)
            if not batch:
                out = Published()
            else:
                # One PRODUCER span per transaction, linked to each event's writer trace (no-op without an SDK).
                with tracing.publish_span(batch, shard=self.shard, epoch=self.epoch):
                    out = publish_batch(transport, batch, shard=self.shard, epoch=self.epoch,
                                        writer=self._recovery.writer(),
                                        checkpoint_partition=self._checkpoints.partition_for(self.shard),
                                        sent=release, midway=self._midway(in_flight), clock=self._clock)
        except PublishError:
            # The transaction's fate is unknown (e.g. a commit that timed out): the next _open re-initialises,
            # which aborts it if it is still open, and recovery marks it if it committed.
            self._drop_transport()
            raise
        finally:
            release()
        if out.broken:
            self._drop_transport()  # it could not abort a refused transaction: replace it
            if out.refused or out.suspect_topics:
                self._prove_checkpoint()
        if out.marks:
            self._metrics.commit_seconds.observe(out.commit_s)
            phases = self._metrics.phase_seconds
            phases.labels("claim").observe(claimed_at - started)
            phases.labels("flush").observe(out.flush_s)
            phases.labels("commit").observe(out.commit_s)
            self._hooks.at(Step.AFTER_COMMIT, self._in_flight(m.id for m in out.marks))
            t_mark = self._clock()
            self._mark(out.marks)
            phases.labels("mark").observe(self._clock() - t_mark)
            self._metrics.batch_rows.observe(len(out.marks))
            self._metrics.batch_seconds.observe(self._clock() - started)
            for m in out.marks:  # a topic with a committed record is not the one a refusal was about
                if m.id in topics:
                    self._suspect_topics.pop(topics[m.id], None)
        self._suspect_topics.update(out.suspect_topics)
        dead = swept + self._handle_failures(batch_len, out, refused_topics, undecodable)
        marked = {m.id for m in out.marks}
        self._floor.finished(min((i for i in claimed_ids if i not in marked), default=None))
        return Result(claimed, len(out.marks),
                      len(out.refused) + len(out.suspects) + len(refused_topics) + len(out.suspect_topics),
                      dead, full and batch_len == claimed and not out.suspects, len(waiting))

    def _in_flight(self, ids: Iterable[int]) -> InFlight:
        return InFlight(self.shard, self.owner, self.epoch, tuple(ids))

    def _midway(self, in_flight: InFlight) -> Callable[[], None] | None:
        """The MID_PRODUCE hook call, if the hooks act there for this batch (else no mid-batch flush)."""
        if not self._hooks.armed(Step.MID_PRODUCE):
            return None
        return lambda: self._hooks.at(Step.MID_PRODUCE, in_flight)

    def _screen(self, transport: Transport, rows: list[PendingRow], refused_topics: dict[int, str],
                undecodable: dict[int, str], waiting: set[int]) -> tuple[list[PendingRow], set[str]]:
        """``rows`` without those of topics the gate finds refused, and those topics. A fresh check counts an
        attempt for each key's first row (into ``refused_topics``, or ``undecodable`` for a row that is also
        undecodable); the rows of a topic not due for a check are added to ``waiting``."""
        gated = self._gate.screen(transport, {r.topic: None for r in rows})
        if not gated:
            return rows, set()
        kept = [r for r in rows if r.topic not in gated]
        waiting.update(r.id for r in rows if r.topic in gated and not gated[r.topic][1])
        counted = [r for r in rows if r.topic in gated and gated[r.topic][1]]
        heads = set(first_of_each_key(counted))  # a key's later rows only wait behind its first
        for r in counted:
            if r.id not in heads:
                continue
            # An undecodable row is dead-lettered as such, not charged an attempt: that update could violate the
            # CHECKs of relay_0003, which only a dead row escapes.
            reason = undecodable_reason(r)
            if reason is None:
                refused_topics[r.id] = gated[r.topic][0]
            else:
                undecodable[r.id] = reason
        rows.clear()
        return kept, set(gated)

    def _prove_checkpoint(self) -> None:
        """Before rows are charged for a transaction refused as a whole by a producer that then had to be
        replaced: the replacement's recovery probe is a transaction of the checkpoint partition alone. If it
        is refused too, the producer as a whole is (not an event topic): no row is charged, and the round is
        retried like any transient failure."""
        try:
            self._open()
        except PermanentPublishError as exc:
            raise KafkaUnavailableError(
                f"a transaction of the checkpoint partition alone is refused ({exc}): the producer as a whole is "
                "refused (check its WRITE grant on OUTBOX_RELAY_CHECKPOINT_TOPIC), not an event topic; no row "
                "is charged, retrying") from exc

    def _mark(self, marks: tuple[Mark, ...]) -> None:
        self._unmarked = marks  # kept until the mark commits: the next batch waits for it
        self._store.mark_published(self.shard, self.owner, self.epoch, marks,
                                   before_commit=lambda: self._hooks.at(Step.MID_MARK,
                                                                        self._in_flight(m.id for m in marks)))
        self._unmarked = ()
        self._metrics.published.labels(self._label).inc(len(marks))
        for m in marks:
            self._suspects.pop(m.id, None)

    def _handle_failures(self, batch_len: int, out: Published, refused_topics: dict[int, str],
                         undecodable: dict[int, str]) -> int:
        dead = self._dead_letter_now({**undecodable, **out.undecodable}, UNDECODABLE,
                                     "a row cannot be turned into a Kafka record")
        refused = {**refused_topics, **out.refused}
        if batch_len == 1:
            refused.update(out.suspects)  # alone in its transaction: the refusal is its own
        else:
            self._suspects.update(out.suspects)
        if not refused:
            return dead
        self._metrics.failures.inc(len(refused))
        attempts = self._store.record_failures(self.shard, self.owner, self.epoch, refused)
        for rid, n in attempts.items():
            log.warning("Kafka refused a row", extra={"shard": self.shard, "row": rid, "attempts": n,
                                                       "error": refused[rid][:300]})
            if n >= self.s.max_attempts and self._store.dead_letter(
                    self.shard, self.owner, self.epoch, rid, reason=refused[rid], error_class="PermanentPublishError"):
                dead += 1
                self._suspects.pop(rid, None)
                self._metrics.dead_lettered.inc()
                log.error("row dead-lettered; its key is held until an operator resolves it",
                          extra={"shard": self.shard, "row": rid, "attempts": n})
        return dead

    def _dead_letter_now(self, reasons: dict[int, str], error_class: str, what: str) -> int:
        """Dead-letter rows no retry can help (the row itself is wrong): at once, without counting attempts."""
        dead = 0
        for rid, reason in reasons.items():
            if self._store.dead_letter(self.shard, self.owner, self.epoch, rid, reason=reason,
                                       error_class=error_class):
                dead += 1
                self._suspects.pop(rid, None)
                self._metrics.dead_lettered.inc()
                log.error(f"{what}: dead-lettered; its key is held until an operator resolves it",
                          extra={"shard": self.shard, "row": rid, "error": reason[:300]})
        return dead

    def _dead_letter_misplaced(self) -> int:
        """Shard 0's worker, at most every MISPLACED_EVERY_S: dead-letter pending rows whose shard no relay can
        have (negative, or at or above MAX_SHARDS). No worker ever claims them, so without this they would wait
        silently forever; under shard 0's lease (and epoch) there is exactly one owner doing it. (Shards in
        [OUTBOX_SHARDS, MAX_SHARDS) are left alone: a shard-count change in progress, reported by ``outbox
        status`` and the stranded-rows gauge.)"""
        if self.shard != 0 or self._clock() < self._misplaced_due:
            return 0
        self._misplaced_due = self._clock() + MISPLACED_EVERY_S
        found = self._store.misplaced(self.s.batch_size)
        return self._dead_letter_now(
            {rid: f"shard {sh} is outside 0..{MAX_SHARDS - 1}: no relay ever claims it (shards are "
                  f"0..OUTBOX_SHARDS-1); `outbox dlq retry` re-queues the row into its key's shard"
             for rid, sh in found.items()},
            "MisplacedRow", "a row has a shard no relay has")

    # --- the loop ----------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> Exit:
        """Loop until ``stop`` is set or the lease is lost. Adaptive polling: full batches go back to back;
        after an empty claim the sleep doubles from poll_min_s up to poll_max_s (no NOTIFY anywhere)."""

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            kind = "kafka" if isinstance(exc, KafkaUnavailableError) else "db"
            if kind == "db":
                self._floor.reset()  # whatever the database is now, start the next claim from the bottom
            self._metrics.retries.labels(kind).inc()
            log.warning("transient failure, retrying", extra={"shard": self.shard, "error": str(exc)[:300],
                                                              "attempt": rs.attempt_number})

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TRANSIENT),
            wait=tenacity.wait_random_exponential(multiplier=self.s.retry_initial_s, max=self.s.retry_max_s),
            stop=lambda _rs: stop.is_set(), sleep=lambda s: _sleep(stop, s), before_sleep=before_sleep,
            reraise=True,
        )
        idle = 0.0
        errors = 0
        try:
            while not stop.is_set():
                try:
                    res = retrying(self.run_once)
                except TRANSIENT:
                    continue  # only reached when stopping during a retry
                except LeaseLostError:
                    return Exit.LEASE_LOST
                except OutboxCollisionError as exc:
                    self.fatal = exc
                    log.error(str(exc), extra={"shard": self.shard})  # noqa: TRY400 - the message says it all
                    return Exit.COLLISION
                except FencedError as exc:
                    self._drop_transport()
                    if not self._owns():
                        log.warning("fenced: another instance owns the shard",
                                    extra={"shard": self.shard, "error": str(exc)[:300]})
                        return Exit.LEASE_LOST
                    continue  # a fatal producer error while still the owner: re-initialise and go on
                except Exception:
                    # A bug or an unforeseen error: never drop the shard's rows, never spin. Back off and retry.
                    errors += 1
                    self._drop_transport()
                    self._floor.reset()
                    log.exception("unexpected error in shard worker", extra={"shard": self.shard})
                    stop.wait(min(self.s.retry_max_s, self.s.retry_initial_s * 2 ** min(errors, 10)))
                    continue
                errors = 0
                if res.idle:
                    idle = min(self.s.poll_max_s, max(self.s.poll_min_s, idle * 2))
                    self.idle = True
                    self._woken.wait(idle)  # the waker (relay/wake.py) or a stop cuts the wait short
                    self._woken.clear()
                    self.idle = False
                else:
                    idle = 0.0
            return Exit.STOPPED
        finally:
            self.close()

    def _owns(self) -> bool:
        try:
            return self._store.owns(self.shard, self.owner, self.epoch)
        except DatabaseUnavailableError:
            return True  # cannot tell: keep the shard; the lease loop decides once the database answers


def _sleep(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)  # interruptible: a shutdown does not wait out a long backoff
