"""Drill-down: only buckets whose digests differ are opened, first as sub-bucket digests, then as rows.

:func:`classify` is the pure heart of the reconciler: given the outbox rows and one group's acknowledgements of
the same id range, it names every missing, duplicated (published at one position, acknowledged from another),
replayed (the same, explained by an audited replay) and unexpected event. Everything else here fetches the rows,
one sub-bucket (≤ 2^sub_bits ids) at a time, so memory stays bounded whatever the table size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from outbox.reconcile.model import Finding, Kind, replays_text
from outbox.store import audit as store

Digests = dict[int, tuple[int, int]]


@dataclass
class Tally:
    """Counts (exact) and named findings (capped) of one group, filled bucket by bucket."""

    cap: int
    counts: dict[Kind, int] = field(default_factory=lambda: dict.fromkeys(Kind, 0))
    named: dict[Kind, list[Finding]] = field(default_factory=lambda: {k: [] for k in Kind})
    acked_in_flight: int = 0
    pruned: int = 0
    # Ids the copies query counts as replayed but whose outbox position is one copy more (see fold_copies).
    overflow: set[int] = field(default_factory=set)

    def add(self, kind: Kind, finding: Finding | None = None, n: int = 1) -> None:
        self.counts[kind] += n
        if finding is not None and len(self.named[kind]) < self.cap:
            self.named[kind].append(finding)

    def merge(self, other: Tally) -> None:
        for k in Kind:
            self.counts[k] += other.counts[k]
            self.named[k].extend(other.named[k][: self.room(k)])
        self.acked_in_flight += other.acked_in_flight
        self.pruned += other.pruned
        self.overflow |= other.overflow

    def room(self, kind: Kind) -> int:
        return self.cap - len(self.named[kind])


def _no_replay(_oid: int) -> tuple[int, ...]:
    return ()


def classify(outbox_rows: Iterable[Any], ack_rows: Iterable[Any], topics: frozenset[str],
             covered: Callable[[int], bool], tally: Tally, *,
             replayed: Callable[[int], tuple[int, ...]] = _no_replay) -> None:
    """Compare one id range row by row. Outbox rows carry ``state`` (settled, inflight, pending, stuck, dead);
    ack rows carry ``copies``, the other positions the group received the event from (those are counted by the
    copies query). ``replayed(id)`` names the replay audits that re-queued an id."""
    acks: dict[int, list[Any]] = {}
    for a in ack_rows:
        acks.setdefault(int(a.outbox_id), []).append(a)
    for o in outbox_rows:
        mine = acks.pop(int(o.id), [])
        expected = o.state == "settled" and o.topic in topics
        match = [a for a in mine if a.event_id == o.event_id]
        for a in mine:
            if a.event_id != o.event_id:
                tally.add(Kind.UNEXPECTED, Finding.of(
                    Kind.UNEXPECTED, a, f"claims outbox id {o.id}, which is event {o.event_id}"))
        if expected and not match:
            tally.add(Kind.MISSING, Finding.of(Kind.MISSING, o, _published(o), id_attr="id"))
            continue
        if not match:
            continue
        a = match[0]
        if expected:
            at, pub = (a.kafka_partition, a.kafka_offset), (o.kafka_partition, o.kafka_offset)
            if o.kafka_partition is not None and at != pub:
                _published_elsewhere(a, f"{at[0]}@{at[1]}", f"{pub[0]}@{pub[1]}", replayed(int(o.id)), tally)
            if (a.topic, a.key_seq, _b(a.key)) != (o.topic, o.key_seq, _b(o.key)):
                tally.add(Kind.UNEXPECTED, Finding.of(
                    Kind.UNEXPECTED, a, f"acknowledged as {a.topic}/seq {a.key_seq}, "
                    f"but the outbox has {o.topic}/seq {o.key_seq}"))
        elif o.state in ("inflight", "pending", "stuck"):
            tally.acked_in_flight += 1  # published after the grace cutoff (or not yet marked): in flight
        elif o.state == "dead":
            tally.add(Kind.UNEXPECTED, Finding.of(Kind.UNEXPECTED, a, "acknowledged, yet dead-lettered by the relay"))
        else:
            tally.add(Kind.UNEXPECTED, Finding.of(
                Kind.UNEXPECTED, a, f"topic {o.topic!r} is not among the group's subscriptions"))
    for oid, left in acks.items():
        for a in left:
            if covered(oid):
                tally.pruned += 1  # the outbox row was pruned after a checkpoint proved it
            else:
                tally.add(Kind.UNEXPECTED, Finding.of(Kind.UNEXPECTED, a, "no outbox row has this id"))


def _published_elsewhere(a: Any, at: str, pub: str, audits: tuple[int, ...], tally: Tally) -> None:
    """The group acknowledged the copy at ``at`` while the outbox records ``pub``: the event was published again.

    With ``k`` replays covering the id, 1 + k copies are accounted for (docs/decisions/022).
    """
    seen = list(a.copies or ())
    replays = replays_text(audits)
    if not seen:
        if audits:
            tally.add(Kind.REPLAYED, Finding.of(
                Kind.REPLAYED, a, f"acknowledged from {at}, re-published at {pub} by {replays} (that copy not "
                "received yet)", replay_audits=audits))
        else:
            tally.add(Kind.DUPLICATED, Finding.of(Kind.DUPLICATED, a,
                                                  f"acknowledged from {at}, but published at {pub}"))
    elif audits and pub not in seen and len(seen) == len(audits):
        # The copies query counted it as replayed (each copy received is explained); the outbox's own
        # position, not received yet, is one copy more.
        tally.overflow.add(int(a.outbox_id))
        tally.add(Kind.DUPLICATED, Finding.of(
            Kind.DUPLICATED, a, f"acknowledged from {at}, received again from {', '.join(seen)}, published again "
            f"at {pub}: {len(seen) + 2} copies in Kafka, but the first publication and {replays} account for "
            f"{len(audits) + 1}", replay_audits=audits))


def _b(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def _published(o: Any) -> str:
    if o.kafka_partition is None:
        return "published, never acknowledged"
    return f"published at {o.kafka_partition}@{o.kafka_offset}, never acknowledged"


@dataclass(frozen=True)
class Scope:
    """Everything a drill needs about one group."""

    producer: sa.Engine
    consumer: sa.Engine
    producer_schema: str
    consumer_schema: str
    group: str
    topics: frozenset[str]
    lo: int
    hi: int
    bits: int
    sub_bits: int
    algo: str
    cutoff: Any
    stuck_before: Any
    checkpoints: tuple[tuple[int, int], ...]
    replayed: Callable[[int], tuple[int, ...]] = _no_replay  # replay audit ids that re-queued an outbox id
    fixes: Mapping[int, int] = field(default_factory=dict)  # sub-bucket -> digest correction for replays

    def covered(self, oid: int) -> bool:
        return any(a <= oid <= b for a, b in self.checkpoints)

    def clip(self, start: int, bits: int) -> tuple[int, int]:
        return max(self.lo, start << bits), min(self.hi, ((start + 1) << bits) - 1)


def drill_bucket(s: Scope, bucket: int, expected: tuple[int, int], acked: tuple[int, int], tally: Tally) -> None:
    """Find out why ``bucket``'s digests differ, recording every finding in ``tally``."""
    a, z = s.clip(bucket, s.bits)
    with s.producer.connect() as pc, s.consumer.connect() as cc:
        if acked[0] == 0:
            _all_missing(s, pc, (a, z), expected[0], tally)
            return
        subs_o = store.outbox_sub(pc, s.producer_schema, a, z, bits=s.sub_bits, algo=s.algo, cutoff=s.cutoff,
                                  topics=sorted(s.topics))
        subs_a = {sub: (n, x ^ s.fixes.get(sub, 0)) for sub, (n, x) in
                  store.ack_sub(cc, s.consumer_schema, s.group, a, z, bits=s.sub_bits, algo=s.algo).items()}
        for sub in sorted(set(subs_o) | set(subs_a)):
            if subs_o.get(sub) == subs_a.get(sub):
                continue
            sa_, sz = max(a, sub << s.sub_bits), min(z, ((sub + 1) << s.sub_bits) - 1)
            if sub not in subs_a:
                _all_missing(s, pc, (sa_, sz), subs_o[sub][0], tally)
                continue
            classify(store.outbox_rows(pc, s.producer_schema, sa_, sz, cutoff=s.cutoff, stuck_before=s.stuck_before),
                     store.ack_rows(cc, s.consumer_schema, s.group, sa_, sz), s.topics, s.covered, tally,
                     replayed=s.replayed)


def _all_missing(s: Scope, pc: sa.Connection, span: tuple[int, int], n: int, tally: Tally) -> None:
    # Nothing acknowledged in the range: every expected event is missing; fetch only the names we can list.
    room = tally.room(Kind.MISSING)
    rows = store.expected_rows(pc, s.producer_schema, *span, cutoff=s.cutoff, topics=sorted(s.topics),
                               limit=room) if room else []
    for r in rows:
        tally.add(Kind.MISSING, Finding.of(Kind.MISSING, r, "published, never acknowledged", id_attr="id"), n=0)
    tally.counts[Kind.MISSING] += n


def drill_tally(scope: Scope, bucket: int, expected: tuple[int, int], acked: tuple[int, int], cap: int) -> Tally:
    """One differing bucket drilled into a fresh tally (run on the reconciler's thread pool)."""
    t = Tally(cap=cap)
    drill_bucket(scope, bucket, expected, acked, t)
    return t
