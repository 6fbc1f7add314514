"""The reconciler's row-level comparison, without a database: every way a range can differ is named."""

from __future__ import annotations

import uuid
from types import SimpleNamespace as Row

from outbox.reconcile.drill import Tally, classify
from outbox.reconcile.model import Kind

T = frozenset({"orders"})


def out(i: int, state: str = "settled", topic: str = "orders", part: int | None = 0, off: int | None = None) -> Row:
    return Row(id=i, event_id=uuid.UUID(int=i), topic=topic, key=b"k", key_seq=i, kafka_partition=part,
               kafka_offset=i if off is None else off, state=state)


def ack(i: int, *, off: int | None = None, eid: int | None = None, seq: int | None = None, copy: bool = False) -> Row:
    return Row(outbox_id=i, event_id=uuid.UUID(int=i if eid is None else eid), topic="orders", key=b"k",
               key_seq=i if seq is None else seq, kafka_partition=0, kafka_offset=i if off is None else off,
               has_copy=copy)


def run(outs: list[Row], acks: list[Row], covered: frozenset[int] = frozenset()) -> Tally:
    t = Tally(cap=10)
    classify(outs, acks, T, covered.__contains__, t)
    return t


def kinds(t: Tally) -> dict[str, int]:
    return {k.value: n for k, n in t.counts.items() if n}


def test_identical_ranges_have_no_findings() -> None:
    assert kinds(run([out(1), out(2)], [ack(1), ack(2)])) == {}


def test_missing_is_named_with_where_it_was_published() -> None:
    t = run([out(1), out(2, off=77)], [ack(1)])
    assert kinds(t) == {"missing": 1}
    [f] = t.named[Kind.MISSING]
    assert f.outbox_id == 2 and f.event_id == str(uuid.UUID(int=2)) and f.detail.startswith("published at 0@77")


def test_ack_from_another_position_is_a_duplicate_unless_the_copy_was_already_recorded() -> None:
    assert kinds(run([out(1)], [ack(1, off=999)])) == {"duplicated": 1}
    assert kinds(run([out(1)], [ack(1, off=999, copy=True)])) == {}, "counted once, through the copies query"
    assert kinds(run([out(1, part=None, off=None)], [ack(1, off=5)])) == {}, "outbox position unknown: no claim"


def test_acks_that_match_no_expected_event_are_unexpected() -> None:
    t = run([out(1, state="dead"), out(2, topic="other"), out(3)], [ack(1), ack(2), ack(3, eid=99), ack(4)])
    assert kinds(t) == {"unexpected": 4, "missing": 1}
    details = sorted(f.detail for f in t.named[Kind.UNEXPECTED])
    assert details == sorted(["acknowledged, yet dead-lettered by the relay",
                              "topic 'other' is not among the group's subscriptions",
                              f"claims outbox id 3, which is event {uuid.UUID(int=3)}", "no outbox row has this id"])


def test_an_altered_sequence_is_unexpected() -> None:
    t = run([out(1)], [ack(1, seq=5)])
    assert kinds(t) == {"unexpected": 1} and "seq 5" in t.named[Kind.UNEXPECTED][0].detail


def test_in_flight_and_pruned_are_not_discrepancies() -> None:
    t = run([out(1, state="inflight"), out(2, state="pending")], [ack(1), ack(2), ack(3)], covered=frozenset({3}))
    assert kinds(t) == {} and t.acked_in_flight == 2 and t.pruned == 1


def test_counts_are_exact_while_names_are_capped() -> None:
    t = run([out(i) for i in range(1, 51)], [])
    assert t.counts[Kind.MISSING] == 50 and len(t.named[Kind.MISSING]) == 10
