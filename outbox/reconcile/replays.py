"""Audited replays: a second Kafka copy that an operator's ``outbox replay`` explains is not a duplicate.

``outbox replay`` re-queues published rows in place and records the replayed ids, as ``[lo, hi]`` runs, in
``replay_audit`` (docs/decisions/030). The relay publishes those rows again, so every group that had the first
copy receives a second one from another Kafka position. Per event whose id ``k`` replays cover, the Kafka
copies known to the reconciler (the acknowledged position, the other positions the group received, the position
the outbox records) may number ``1 + k``: those beyond the first are **replayed**, and any copy more is
**duplicated** (docs/decisions/022). An id no replay covers still allows exactly one copy.

The runs are read once per reconcile on the producer (:meth:`Replays.load`); the consumer side matches copies
against them inside Postgres (:mod:`outbox.store.audit_copies`), and the drill-down looks ids up here by
binary search: never a query per event.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from outbox.reconcile.drill import Tally
from outbox.reconcile.model import Finding, Kind, Replay, replays_text
from outbox.store import audit as audit_store
from outbox.store import audit_copies as store

_END = 1 << 63


@dataclass(frozen=True)
class Replays:
    """The replay audits whose replayed ids overlap the window, with their runs clipped to it."""

    audits: tuple[store.ReplayAudit, ...] = ()

    @classmethod
    def load(cls, producer: sa.Engine, schema: str, lo: int, hi: int) -> Replays:
        if hi < lo:
            return cls()
        with producer.connect() as c, c.begin():
            audit_store.tune(c)
            return cls(tuple(store.replay_audits(c, schema, lo, hi)))

    def __bool__(self) -> bool:
        return bool(self.audits)

    def covering(self, oid: int) -> tuple[int, ...]:
        """The ids of the replay audits that re-queued outbox id ``oid`` (binary search per audit)."""
        return tuple(a.id for a in self.audits if _inside(a.runs, oid))

    def report(self) -> tuple[Replay, ...]:
        return tuple(Replay(a.id, a.actor, a.created_at, a.event_count, a.runs) for a in self.audits)


def _inside(runs: Sequence[tuple[int, int]], oid: int) -> bool:
    i = bisect_right(runs, (oid, _END)) - 1
    return i >= 0 and runs[i][0] <= oid <= runs[i][1]


def fold_copies(tally: Tally, found: store.Copies) -> None:
    """Add the counts and names of :func:`outbox.store.audit_copies.copies` to ``tally``.

    The copies query cannot see the position the outbox records. When the drill-down found that position to be
    one copy more than the replays explain (``tally.overflow``), it already counted that event as duplicated;
    it is taken out of the replayed count and names here.
    """
    for x in found.named:
        audits = tuple(sorted(int(a) for a in x.audits))
        got = f"acknowledged from {x.ack_partition}@{x.ack_offset}, received again from {', '.join(x.other)}"
        if x.kind == Kind.REPLAYED.value:
            if int(x.outbox_id) not in tally.overflow:
                tally.add(Kind.REPLAYED, Finding.of(Kind.REPLAYED, x, f"{got}: re-published by {replays_text(audits)}",
                                                    replay_audits=audits), n=0)
        elif audits:
            tally.add(Kind.DUPLICATED, Finding.of(
                Kind.DUPLICATED, x, f"{got}: {len(x.other) + 1} copies in Kafka, but the first publication and "
                f"{replays_text(audits)} account for {len(audits) + 1}", replay_audits=audits), n=0)
        else:
            tally.add(Kind.DUPLICATED, Finding.of(Kind.DUPLICATED, x, got), n=0)
    tally.counts[Kind.DUPLICATED] += found.totals.get(Kind.DUPLICATED.value, 0)
    tally.counts[Kind.REPLAYED] += max(0, found.totals.get(Kind.REPLAYED.value, 0) - len(tally.overflow))


def bucket_fixes(fixes: Mapping[int, int], shift: int) -> dict[int, int]:
    """Sub-bucket digest corrections combined into buckets ``shift`` bits wider."""
    out: dict[int, int] = {}
    for s, x in fixes.items():
        out[s >> shift] = out.get(s >> shift, 0) ^ x
    return out
