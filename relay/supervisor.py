"""The process: lease loop, one worker thread per owned shard, stats, and the two-stage shutdown.

Threads, and why: a worker spends most of a batch waiting on Postgres or on the broker (both release the GIL),
so shards overlap their waits; the lease loop must renew on time whatever a worker is doing. Scale CPU-bound
throughput with more relay processes (shards spread over them), not threads (prior-art pitfall 4).

Shutdown: ``stop`` stops claiming (each worker finishes its in-flight batch: commit + mark), then leases are
released so peers take over at once, and the instance deregisters. Past ``drain_deadline_s`` the process gives
up on slow workers: their open transaction is aborted by the next owner's ``init_transactions``.

Probes (relay/http.py): healthy while the lease loop turns, whatever the database and Kafka do; ready while the
last lease round succeeded within a TTL, a Kafka broker answers, and it is not stopping. A worker that ends
with ``Exit.COLLISION`` (another outbox's checkpoint under this relay's transactional ids) is fatal: its error
is kept in :attr:`Supervisor.fatal`, every worker is stopped as on shutdown, and the process exits 3.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from outbox.errors import OutboxCollisionError, OutboxError, StoreError
from outbox.store.relay import RelayStore
from outbox.store.relay_probe import NewRowsProbe
from relay.config import RelaySettings
from relay.floor import ClaimFloor
from relay.hooks import NO_HOOKS, Hooks
from relay.http import Pulse, liveness_window_s
from relay.leases import LeaseManager
from relay.logs import REPEAT_LOG_INTERVAL_S
from relay.metrics import Metrics
from relay.ports import CheckpointLog, Transport
from relay.wake import Waker
from relay.worker import Exit, ShardWorker

log = logging.getLogger("relay.supervisor")


@dataclass
class _Running:
    worker: ShardWorker
    stop: threading.Event
    thread: threading.Thread
    exit: list[Exit] = field(default_factory=list)

    def halt(self) -> None:
        self.stop.set()
        self.worker.wake()  # out of an idle wait at once


class Supervisor:
    def __init__(self, settings: RelaySettings, store: RelayStore, *, transport_factory: Callable[[int], Transport],
                 checkpoints: CheckpointLog, metrics: Metrics | None = None, hooks: Hooks | None = None,
                 housekeeping: Callable[[], None] | None = None, kafka_check: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.s, self.store = settings, store
        self._factory, self._checkpoints = transport_factory, checkpoints
        self.metrics = metrics or Metrics()
        self.hooks = NO_HOOKS if hooks is None else hooks  # shared by the workers (relay/hooks.py)
        self.leases = LeaseManager(store, settings)
        self._housekeeping = housekeeping
        self._slots = threading.Semaphore(settings.concurrency)
        self._running: dict[int, _Running] = {}
        self._releasing: set[int] = set()
        self._last_tick = 0.0
        self._started = False
        self._stopping = False
        self._stranded = 0  # pending rows beyond OUTBOX_SHARDS at the last stats round
        self._floor_ok: bool | None = None  # the id sequence allows a claim floor (asked once)
        self._clock = clock
        self.pulse = Pulse(liveness_window_s(settings.heartbeat_s, settings.kafka_timeout_s), clock)
        self._db_ok = False  # the last lease round succeeded
        self._kafka_check = kafka_check  # does a broker answer (None: not checked, e.g. with fakes)
        self._kafka_ok = True  # start-up has just reached Kafka
        self.fatal: OutboxError | None = None  # set by a worker that must stop the process (exit 3)
        self._run_stop: threading.Event | None = None
        self._failed_rounds, self._failure_logged_at = 0, 0.0  # lease rounds failed in a row; last said when

    # --- health ------------------------------------------------------------------------------------------
    def healthy(self) -> bool:
        """Liveness: the lease loop turned within the pulse window (failed rounds count: an outage is not a
        reason to restart the process; a loop stuck in a call that never returns is)."""
        return self.pulse.alive()

    def ready(self) -> bool:
        """Readiness: leases renewing (the last round succeeded, within a TTL), a broker answers, not stopping."""
        return (self._started and not self._stopping and self.fatal is None and self._db_ok and self._kafka_ok
                and self._clock() - self._last_tick < self.s.lease_ttl_s)

    @property
    def owned(self) -> list[int]:
        return sorted(self._running)

    # --- workers -----------------------------------------------------------------------------------------
    def _start(self, shard: int, epoch: int) -> None:
        w = ShardWorker(shard, epoch, settings=self.s, store=self.store, transport_factory=self._factory,
                        checkpoints=self._checkpoints, metrics=self.metrics, hooks=self.hooks,
                        slots=self._slots, floor=ClaimFloor(self._floor_enabled()))
        stop = threading.Event()

        def body() -> None:
            ex = w.run(stop)
            r.exit.append(ex)
            if ex is Exit.COLLISION:
                self._fail(shard, w.fatal)

        r = _Running(w, stop, threading.Thread(target=body, name=f"relay-shard-{shard}", daemon=True))
        self._running[shard] = r
        r.thread.start()
        self.metrics.lease_events.labels("acquired").inc()
        log.info("shard acquired", extra={"shard": shard, "epoch": epoch})

    def _fail(self, shard: int, error: OutboxError | None) -> None:
        """A worker found a reason to stop the whole process: keep the first error and stop as on SIGTERM."""
        if self.fatal is None:
            self.fatal = error or OutboxCollisionError(
                f"shard {shard}: another outbox's checkpoint was found under this relay's transactional ids")
        if self._run_stop is not None:
            self._run_stop.set()

    def _floor_enabled(self) -> bool:
        """The claim floor is sound only when event ids are drawn in time order: no sequence cache (ADR 015)."""
        if self._floor_ok is None and self.s.claim_floor:
            try:
                cache = self.store.id_sequence_cache()
            except StoreError:
                return False  # ask again for the next shard
            self._floor_ok = cache == 1
            if not self._floor_ok:
                log.warning("the event id sequence's CACHE is not 1 (or it was not found), so ids may not be "
                            "drawn in time order: claims start from each shard's lowest pending id (no claim "
                            "floor; docs/decisions/015)", extra={"cache": cache})
        return bool(self._floor_ok) and self.s.claim_floor

    def _reap(self) -> None:
        """Collect finished workers: release rebalanced shards, forget lost ones."""
        for shard, r in list(self._running.items()):
            if r.thread.is_alive():
                continue
            del self._running[shard]
            ex = r.exit[0] if r.exit else Exit.STOPPED
            if shard in self._releasing:
                self._releasing.discard(shard)
                self.leases.release([shard])
                self.metrics.lease_events.labels("released").inc()
                log.info("shard released for rebalance", extra={"shard": shard})
            elif ex is Exit.LEASE_LOST:
                self.leases.forget(shard)
                self.metrics.lease_events.labels("lost").inc()
                log.warning("shard lost to another instance", extra={"shard": shard})
            # Otherwise (stopped because the database was lost, or an unexpected exit) the shard stays in
            # leases.held and _converge() restarts a worker for it once the lease is renewed again.

    def tick(self) -> float:
        """One lease round; returns the seconds until the next."""
        self._reap()
        t = self.leases.tick(accept=not self._stopping)
        self._last_tick = self._clock()
        if self._failed_rounds:
            log.info("lease rounds succeed again: ready", extra={"rounds_failed": self._failed_rounds})
            self._failed_rounds = 0
        self._db_ok = True
        for shard in t.lost:
            if shard in self._running:
                self._running[shard].halt()
                self._releasing.discard(shard)
        for shard in t.release:
            if shard in self._running and shard not in self._releasing:
                self._releasing.add(shard)
                self._running[shard].halt()
        for shard, epoch in t.acquired.items():
            old = self._running.get(shard)
            if old is not None:  # lost, then retaken while the old worker still finishes: not both at once
                old.halt()
                old.thread.join(self.s.heartbeat_s / 4)
                if old.thread.is_alive():
                    self.leases.release([shard])  # try again next tick
                    continue
                self._running.pop(shard, None)
            self._start(shard, epoch)
        self._converge()
        self.metrics.leases_held.set(len(self.leases.held))
        return t.next_in_s

    def _converge(self) -> None:
        """Every renewed lease has a live worker. Without this, a worker that ended while the database was
        down (its release failing) left a lease renewed forever by an instance publishing nothing for it."""
        if self._stopping:
            return
        for shard, epoch in sorted(self.leases.held.items()):
            if shard not in self._running and shard not in self._releasing:
                log.warning("restarting the worker of a held shard", extra={"shard": shard, "epoch": epoch})
                self._start(shard, epoch)

    def _stats_loop(self, stop: threading.Event) -> None:
        # Refresh at once, then every interval: gauges are right from the first scrape, not 5 s later.
        while True:
            try:
                owned = self.owned
                by_shard = {b.shard: b for b in self.store.backlog_gauges(owned)} if owned else {}
                self.metrics.backlog.clear()
                self.metrics.oldest_age.clear()
                for s in owned:
                    b = by_shard.get(s)
                    self.metrics.backlog.labels(str(s)).set(b.pending if b else 0)
                    self.metrics.oldest_age.labels(str(s)).set((b.oldest_age_s or 0.0) if b else 0.0)
                self.metrics.claim_floor.clear()
                for s, r in list(self._running.items()):
                    self.metrics.claim_floor.labels(str(s)).set(r.worker.claim_floor)
                self.metrics.dead_letters_open.set(self.store.dead_letters_open())
                self.metrics.held_keys.set(len(self.store.held_keys()))
                self._check_stranded()
            except StoreError as exc:
                log.warning("stats refresh failed", extra={"error": str(exc)[:300]})
            if self._housekeeping is not None:
                self._housekeeping()
            if stop.wait(self.s.stats_interval_s):
                return

    def _round_failed(self, exc: StoreError) -> None:
        """Rounds fail every half heartbeat while the database is down: say so at the first, then once per
        interval with the count, rather than several lines a second."""
        self._db_ok = False
        self._failed_rounds += 1
        now = self._clock()
        if self._failed_rounds == 1 or now - self._failure_logged_at >= REPEAT_LOG_INTERVAL_S:
            self._failure_logged_at = now
            log.warning("lease round failed: not ready until the database answers",
                        extra={"error": str(exc)[:300], "rounds_failed": self._failed_rounds})

    def _kafka_loop(self, stop: threading.Event, check: Callable[[], bool]) -> None:
        """Keeps ``_kafka_ok`` for /readyz: a broker answered the last check (each bounded by its timeout)."""
        while True:
            ok = check()
            if ok != self._kafka_ok:
                if ok:
                    log.info("Kafka answers again: ready")
                else:
                    log.warning("no Kafka broker answers: not ready (shards retry with backoff)",
                                extra={"bootstrap_servers": self.s.bootstrap_servers})
            self._kafka_ok = ok
            if stop.wait(max(1.0, self.s.heartbeat_s)):
                return

    def _any_idle(self) -> bool:
        return any(r.worker.idle for r in list(self._running.values()))

    def _wake(self, shards: frozenset[int] | None) -> None:
        for shard, r in list(self._running.items()):
            if shards is None or shard in shards:
                r.worker.wake()

    def _check_stranded(self) -> None:
        """The start-up check, kept up while running: a writer deployed with a larger OUTBOX_SHARDS puts rows
        where no relay looks. They are not lost (the reconciler reports them as stuck), but nothing would
        publish them, so say so loudly: a gauge to alert on and an error log whenever the count changes."""
        st = self.store.stranded(self.s.shards)
        self.metrics.stranded.set(st.pending)
        if st.pending == self._stranded:
            return
        if st.pending:
            log.error("pending rows sit in shards no relay claims: a writer uses another OUTBOX_SHARDS; set the "
                      "writers' OUTBOX_SHARDS to the relays' value, then follow "
                      "docs/operations.md#changing-the-shard-count to publish the stranded rows",
                      extra={"stranded": st.pending, "highest_shard": st.highest_shard, "shards": self.s.shards})
        else:
            log.info("no pending rows are stranded beyond OUTBOX_SHARDS any more", extra={"shards": self.s.shards})
        self._stranded = st.pending

    # --- the process -------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then drain within ``drain_deadline_s`` and release everything."""
        self._run_stop = stop
        leases_rows = False  # the lease table has a row per shard (made in the first round the database answers)
        stats_stop = threading.Event()
        threading.Thread(target=self._stats_loop, args=(stats_stop,), name="relay-stats", daemon=True).start()
        if self._kafka_check is not None:
            threading.Thread(target=self._kafka_loop, args=(stats_stop, self._kafka_check), name="relay-kafka-check",
                             daemon=True).start()
        if self.s.wake_interval_s > 0:
            probe = NewRowsProbe(self.store.engine, self.s.db_schema)
            waker = Waker(probe, self._wake, interval_s=self.s.wake_interval_s, needed=self._any_idle)
            threading.Thread(target=waker.run, args=(stats_stop,), name="relay-wake", daemon=True).start()
        self._started = True
        try:
            while not stop.is_set():
                self.pulse.beat()
                try:
                    if not leases_rows:
                        self.store.ensure_leases(self.s.shards)
                        leases_rows = True
                    wait = self.tick()
                except StoreError as exc:
                    self._round_failed(exc)
                    wait = self.s.heartbeat_s / 2
                    if self.leases.expired_locally():
                        # Our leases may belong to others by now; Kafka fencing keeps this safe, but stop
                        # working blind and re-acquire once the database is back.
                        self._stop_all()
                self.pulse.beat()
                self.metrics.ready.set(1 if self.ready() else 0)
                stop.wait(wait)
        finally:
            stats_stop.set()
            self.shutdown()

    def _stop_all(self) -> None:
        for r in self._running.values():
            r.halt()
        self.metrics.ready.set(0)

    def shutdown(self) -> None:
        self._stopping = True
        self.metrics.ready.set(0)
        self._stop_all()
        deadline = time.monotonic() + self.s.drain_deadline_s
        for shard, r in list(self._running.items()):
            r.thread.join(max(0.0, deadline - time.monotonic()))
            if r.thread.is_alive():
                log.warning("shard did not drain before the deadline; its open transaction will be aborted by "
                            "the next owner", extra={"shard": shard})
        self._running.clear()
        try:
            self.leases.release_all()
        except StoreError as exc:
            log.warning("could not release leases; peers take over when they expire",
                        extra={"error": str(exc)[:300]})
        log.info("relay stopped", extra={"instance": self.s.instance_id})
