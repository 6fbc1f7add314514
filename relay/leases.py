"""Shard leases: who publishes which shard, renewed by heartbeat, re-balanced as instances come and go.

Every ``heartbeat_s`` an instance (1) records its heartbeat and reads the live instances, (2) renews its leases,
(3) computes its fair share and gives up or takes shards to reach it. Shares are deterministic: live instances
sorted by id, ``shards // n`` each, the first ``shards % n`` one more, so every instance computes the same
split and they converge in a tick or two without talking to each other. A lease is taken only when free,
released, or expired (database clock), with its epoch bumped: the DB-side fencing token.

Failover: when a peer stops renewing, its leases expire ``lease_ttl_s`` after its last renewal; the manager
schedules its next tick for just after the earliest such expiry rather than waiting a full heartbeat.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from outbox.store.relay import Lease, RelayStore
from relay.config import RelaySettings


def quota(me: str, live: Sequence[str], shards: int) -> int:
    """This instance's fair share of ``shards`` among the ``live`` instances."""
    ordered = sorted(set(live) | {me})
    i = ordered.index(me)
    n = len(ordered)
    return shards // n + (1 if i < shards % n else 0)


@dataclass(frozen=True)
class Plan:
    acquire: tuple[int, ...]
    release: tuple[int, ...]
    wake_in_s: float | None  # a wanted lease expires this soon: tick again then


def plan(me: str, live: Sequence[str], leases: Sequence[Lease], held: Mapping[int, int], shards: int) -> Plan:
    """What to do this tick to move toward the fair share (pure: unit-tested without a database)."""
    q = quota(me, live, shards)
    mine = sorted(held)
    release = tuple(mine[q:]) if len(mine) > q else ()  # give up the highest-numbered extras
    deficit = q - len(mine)
    acquire: tuple[int, ...] = ()
    wake: float | None = None
    if deficit > 0:
        valid = [le for le in leases if le.shard < shards and le.shard not in held]
        # Our own name on a lease we do not track: a restart with a fixed instance id; take it back at once.
        acquire = tuple(le.shard for le in valid if le.free or le.owner == me)[:deficit]
        if len(acquire) < deficit:
            # Leases of dead peers (not live) expire on their own: be there the moment they do.
            pending = [le.expires_in_s for le in valid if not le.free and le.owner not in live
                       and le.expires_in_s is not None]
            wake = min(pending) if pending else None
    return Plan(acquire, release, wake)


@dataclass(frozen=True)
class Tick:
    acquired: Mapping[int, int]  # shard → epoch
    lost: tuple[int, ...]
    release: tuple[int, ...]  # over the fair share: stop these workers, then call release()
    next_in_s: float
    live: tuple[str, ...]


class LeaseManager:
    def __init__(self, store: RelayStore, settings: RelaySettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store, self._s, self._clock = store, settings, clock
        self.me = settings.instance_id
        self.held: dict[int, int] = {}
        self.last_renewed = clock()

    def tick(self, accept: bool = True) -> Tick:
        """One round; ``accept=False`` renews and reports but takes nothing (shutting down)."""
        ttl = self._s.lease_ttl_s
        live = tuple(self._store.heartbeat(self.me, socket.gethostname(), os.getpid(), ttl))
        renewed = self._store.renew(self.me, self.held, ttl)
        lost = tuple(sorted(set(self.held) - set(renewed)))
        self.held = dict(renewed)
        self.last_renewed = self._clock()
        p = plan(self.me, live, self._store.leases(), self.held, self._s.shards)
        acquired = self._store.acquire(self.me, p.acquire, ttl) if accept and p.acquire else {}
        self.held.update(acquired)
        nxt = self._s.heartbeat_s
        if p.wake_in_s is not None:
            nxt = min(nxt, max(0.02, p.wake_in_s + 0.02))
        return Tick(acquired, lost, p.release if accept else (), nxt, live)

    def release(self, shards: Sequence[int]) -> None:
        give = {s: self.held[s] for s in shards if s in self.held}
        self._store.release(self.me, give)
        for s in give:
            self.held.pop(s, None)

    def forget(self, shard: int) -> None:
        """A worker found the shard taken over: stop renewing it."""
        self.held.pop(shard, None)

    def release_all(self) -> None:
        self.release(list(self.held))
        self._store.deregister(self.me)

    def expired_locally(self) -> bool:
        """No successful renewal for a whole TTL: peers may already own our shards."""
        return self._clock() - self.last_renewed > self._s.lease_ttl_s
