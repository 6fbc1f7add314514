"""What a reconcile run covers: the options, the window resolved to ids, and the consumer groups found.

A time window (``since``/``until``) becomes the id range covering the rows created in it; every cutoff comes from
the *database* clock, so the auditor's machine clock does not matter. Groups are discovered from the
``subscription`` rows their inboxes register in each consumer database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from outbox.errors import ConfigError, ReconcileError
from outbox.reconcile.config import MAX_CAP, MAX_JOBS, MAX_SECONDS, check_window, in_range
from outbox.reconcile.model import Window
from outbox.store import audit as store


@dataclass(frozen=True)
class ConsumerDatabase:
    """A database holding inbox rows (acknowledgements) and subscriptions of one or more groups."""

    engine: sa.Engine
    schema: str = "outbox"

    @property
    def label(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)


@dataclass(frozen=True)
class Options:
    """The window (ids and/or creation times), the grace and stuck SLO, and tuning (documented in the CLI)."""

    from_id: int | None = None
    to_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    grace: timedelta = timedelta(seconds=30)
    stuck_after: timedelta = timedelta(minutes=5)
    groups: tuple[str, ...] = ()
    bucket_bits: int = 16
    sub_bits: int = 10
    cap: int = 100
    algorithm: str = "hash"
    jobs: int = 4
    bins: int = 60
    checkpoint: bool = False

    def __post_init__(self) -> None:
        if self.algorithm not in store.HASHES:
            raise ReconcileError(f"unknown digest algorithm {self.algorithm!r}; use one of {sorted(store.HASHES)}")
        if not 0 < self.sub_bits < self.bucket_bits <= 40:
            raise ReconcileError(f"invalid reconcile options: need 0 < sub_bits ({self.sub_bits}) < bucket_bits "
                                 f"({self.bucket_bits}) <= 40")
        try:  # the same limits as the CLI's flags, named by field here
            check_window(self.from_id, self.to_id, self.since, self.until, ("from_id", "to_id", "since", "until"))
            in_range(self.grace.total_seconds(), "grace", 0, MAX_SECONDS, " seconds")
            in_range(self.stuck_after.total_seconds(), "stuck_after", 0, MAX_SECONDS, " seconds")
            in_range(self.jobs, "jobs", 1, MAX_JOBS)
            in_range(self.cap, "cap", 0, MAX_CAP)
        except ConfigError as exc:
            raise ReconcileError(f"invalid reconcile options: {exc}") from exc


def resolve_window(producer: sa.Engine, schema: str, o: Options) -> tuple[Window, int, int, float]:
    with producer.connect() as c:
        now = store.now(c)
        lo, hi = store.id_bounds(c, schema, o.since, o.until)
        lo = max(x for x in (lo, o.from_id) if x is not None) if lo is not None else None
        hi = min(x for x in (hi, o.to_id) if x is not None) if hi is not None else None
        t0 = store.created_at(c, schema, lo) if lo is not None else None
    win = Window(id_lo=lo, id_hi=hi, since=o.since, until=o.until, grace_s=o.grace.total_seconds(),
                 stuck_after_s=o.stuck_after.total_seconds(), now=now, cutoff=now - o.grace,
                 stuck_before=now - o.stuck_after)
    start = (t0 or now - timedelta(hours=1)).timestamp()
    if lo is None or hi is None or hi < lo:
        return win, 1, 0, start
    return win, lo, hi, start


Groups = dict[str, tuple[ConsumerDatabase, tuple[str, ...]]]


def discover_groups(dbs: Sequence[ConsumerDatabase], only: tuple[str, ...]) -> Groups:
    seen: dict[str, list[tuple[ConsumerDatabase, tuple[str, ...]]]] = {}
    for db in dbs:
        with db.engine.connect() as c:
            for g, topics in store.subscriptions(c, db.schema).items():
                seen.setdefault(g, []).append((db, tuple(topics)))
    found: Groups = {}
    for g, places in seen.items():
        if len(places) > 1:
            # A subscription mirrored beside the outbox by a checkpoint has no inbox rows there: skip it.
            with_acks = [p for p in places if _has_acks(p[0], g)]
            if len(with_acks) > 1:
                raise ReconcileError(f"consumer group {g!r} has acknowledgements in two databases "
                                     f"({with_acks[0][0].label} and {with_acks[1][0].label}); "
                                     "reconcile them separately")
            found[g] = (with_acks or places)[0]
        else:
            found[g] = places[0]
    if only:
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise ReconcileError(f"consumer group(s) {unknown} have no subscription in {[d.label for d in dbs]}; "
                                 f"known groups: {sorted(found)}")
        found = {g: v for g, v in found.items() if g in only}
    if not found:
        raise ReconcileError(f"no consumer group has registered a subscription in {[d.label for d in dbs]}: "
                             "run the inbox once, or point --inbox-database-url at the consumers' databases")
    return found


def _has_acks(db: ConsumerDatabase, group: str) -> bool:
    with db.engine.connect() as c:
        return store.has_acks(c, db.schema, group)


def chunks(lo: int, hi: int, k: int) -> list[tuple[int, int]]:
    if hi < lo:
        return []
    size = max(1, -(-(hi - lo + 1) // k))
    return [(a, min(hi, a + size - 1)) for a in range(lo, hi + 1, size)]


