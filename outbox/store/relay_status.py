"""The read side of the relay's tables: leases, backlog, instances, dead letters, held keys (``outbox status``,
the relay's gauges and its lease planning), and pending rows stranded beyond the shard count (the relay's
start-up check). Read-only; every query runs in its own short connection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from outbox.errors import SchemaBehindError
from outbox.schema import dead_letter, event, relay_instance, relay_lease
from outbox.store import translate_errors

_PENDING = sa.and_(event.c.published_at.is_(None), event.c.dead_at.is_(None))


@dataclass(frozen=True, slots=True)
class Lease:
    shard: int
    owner: str | None
    epoch: int
    expires_at: datetime | None
    renewed_at: datetime | None
    expires_in_s: float | None  # by the database clock; None when free, negative when expired

    @property
    def free(self) -> bool:
        """Takeable now: never owned, released, or expired."""
        return self.owner is None or self.expires_in_s is None or self.expires_in_s < 0


@dataclass(frozen=True, slots=True)
class ShardBacklog:
    shard: int
    pending: int
    oldest_age_s: float | None


@dataclass(frozen=True, slots=True)
class Stranded:
    """Pending rows in shards ``>= shards``, which no relay configured with ``shards`` ever claims (the count was
    lowered with a backlog, or writers and relays disagree; docs/operations.md#changing-the-shard-count)."""

    shards: int
    pending: int
    highest_shard: int | None  # None when nothing is stranded


@dataclass(frozen=True, slots=True)
class HeldKey:
    topic: str
    key: bytes | None
    dead_letters: int
    since: datetime


@dataclass(frozen=True, slots=True)
class Instance:
    instance_id: str
    host: str
    pid: int
    heartbeat_age_s: float
    version: str | None = None  # None: a relay of a build from before versions were recorded (relay_0005)


@dataclass(frozen=True, slots=True)
class Status:
    backlog: tuple[ShardBacklog, ...]
    leases: tuple[Lease, ...]
    instances: tuple[Instance, ...]
    dead_letters_open: int
    held_keys: tuple[HeldKey, ...]
    shards: int | None = None  # the configured OUTBOX_SHARDS, when known: shards at or beyond it are stranded

    @property
    def pending(self) -> int:
        return sum(b.pending for b in self.backlog)

    @property
    def stranded(self) -> tuple[ShardBacklog, ...]:
        """Backlog of shards no relay with ``shards`` claims (empty when ``shards`` is unknown)."""
        if self.shards is None:
            return ()
        return tuple(b for b in self.backlog if b.shard >= self.shards and b.pending)


class StatusQueries:
    """Mixed into ``RelayStore``; needs ``self._engine``."""

    _engine: sa.Engine

    def leases(self) -> list[Lease]:
        lt = relay_lease
        q = sa.select(lt.c.shard, lt.c.owner, lt.c.epoch, lt.c.expires_at, lt.c.renewed_at,
                      sa.func.extract("epoch", lt.c.expires_at - sa.func.now())).order_by(lt.c.shard)
        with translate_errors("reading leases"), self._engine.connect() as c:
            return [Lease(int(r[0]), r[1], int(r[2]), r[3], r[4], None if r[5] is None else float(r[5]))
                    for r in c.execute(q).all()]

    # --- status ------------------------------------------------------------------------------------------
    def backlog(self, shards: Sequence[int] | None = None) -> list[ShardBacklog]:
        q = (sa.select(event.c.shard, sa.func.count(),
                       sa.func.extract("epoch", sa.func.now() - sa.func.min(event.c.created_at)))
             .where(_PENDING).group_by(event.c.shard).order_by(event.c.shard))
        if shards is not None:
            q = q.where(event.c.shard.in_(list(shards)))
        with translate_errors("reading the backlog"), self._engine.connect() as c:
            return [ShardBacklog(int(s), int(n), float(a) if a is not None else None) for s, n, a in c.execute(q)]

    def backlog_gauges(self, shards: Sequence[int], exact_up_to: int = 10_000) -> list[ShardBacklog]:
        """``backlog`` for the relay's gauges, refreshed every few seconds: its cost is bounded whatever the
        backlog. An exact count reads every pending row (seconds at 1M rows, and a snapshot held that long, which
        keeps vacuum and the claims' scans from dropping dead index entries). Here each shard reads at most
        ``exact_up_to`` pending rows: below that the count is exact; above it, it is estimated from their id
        density up to the shard's highest pending id. The age is that of the oldest of those rows."""
        head = (sa.select(event.c.id, event.c.created_at)
                .where(event.c.shard == sa.bindparam("shard", type_=sa.Integer), _PENDING)
                .order_by(event.c.id).limit(exact_up_to).subquery())
        q_head = sa.select(sa.func.count(), sa.func.min(head.c.id), sa.func.max(head.c.id),
                           sa.func.extract("epoch", sa.func.now() - sa.func.min(head.c.created_at)))
        q_top = sa.select(sa.func.max(event.c.id)).where(
            event.c.shard == sa.bindparam("shard", type_=sa.Integer), _PENDING)
        out: list[ShardBacklog] = []
        with translate_errors("reading the backlog"), self._engine.connect() as c:
            for shard in shards:
                n, first, last, age = c.execute(q_head, {"shard": shard}).one()
                if not n:
                    continue
                if n >= exact_up_to:
                    top = int(c.execute(q_top, {"shard": shard}).scalar_one())
                    n = round(n * (top - first + 1) / (last - first + 1))
                out.append(ShardBacklog(shard, int(n), None if age is None else float(age)))
        return out

    def stranded(self, shards: int) -> Stranded:
        """Pending rows with ``shard >= shards``: their count and highest shard.

        Cheap on any table size: the predicate matches the partial index ``ix_event_pending (shard, id) WHERE
        <pending>``, so Postgres reads only the index entries of the stranded rows (none, normally).
        """
        q = sa.select(sa.func.count(), sa.func.max(event.c.shard)).where(_PENDING, event.c.shard >= shards)
        with translate_errors("counting pending rows beyond the shard count"), self._engine.connect() as c:
            n, top = c.execute(q).one()
        return Stranded(shards, int(n), None if top is None else int(top))

    def held_keys(self, limit: int = 1000) -> list[HeldKey]:
        d = dead_letter
        q = (sa.select(d.c.topic, d.c.key, sa.func.count(), sa.func.min(d.c.failed_at))
             .where(d.c.resolved_at.is_(None)).group_by(d.c.topic, d.c.key)
             .order_by(sa.func.min(d.c.failed_at)).limit(limit))
        with translate_errors("reading held keys"), self._engine.connect() as c:
            return [HeldKey(t, bytes(k) if k is not None else None, int(n), ts) for t, k, n, ts in c.execute(q)]

    def dead_letters_open(self) -> int:
        q = sa.select(sa.func.count()).select_from(dead_letter).where(dead_letter.c.resolved_at.is_(None))
        with translate_errors("counting dead letters"), self._engine.connect() as c:
            return int(c.execute(q).scalar_one())

    def instances(self) -> list[Instance]:
        it = relay_instance
        age = sa.func.extract("epoch", sa.func.now() - it.c.heartbeat_at)
        q = sa.select(it.c.instance_id, it.c.host, it.c.pid, age, it.c.version).order_by(it.c.instance_id)
        try:
            with translate_errors("reading instances"), self._engine.connect() as c:
                return [Instance(str(i), str(h), int(p), float(a), v) for i, h, p, a, v in c.execute(q)]
        except SchemaBehindError:
            pass
        # A schema from before relay_0005 (an upgrade checking that the old relays are gone, before it migrates):
        # no relay has recorded a version yet.
        q = sa.select(it.c.instance_id, it.c.host, it.c.pid, age).order_by(it.c.instance_id)
        with translate_errors("reading instances"), self._engine.connect() as c:
            return [Instance(str(i), str(h), int(p), float(a)) for i, h, p, a in c.execute(q)]

    def status(self, shards: int | None = None) -> Status:
        """Everything ``outbox status`` shows; with the configured ``shards``, rows beyond it are flagged."""
        return Status(tuple(self.backlog()), tuple(self.leases()), tuple(self.instances()),
                      self.dead_letters_open(), tuple(self.held_keys()), shards)
