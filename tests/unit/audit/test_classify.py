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


def ack(i: int, *, off: int | None = None, eid: int | None = None, seq: int | None = None,
        copies: tuple[str, ...] = ()) -> Row:
    return Row(outbox_id=i, event_id=uuid.UUID(int=i if eid is None else eid), topic="orders", key=b"k",
               key_seq=i if seq is None else seq, kafka_partition=0, kafka_offset=i if off is None else off,
               copies=list(copies))


def run(outs: list[Row], acks: list[Row], covered: frozenset[int] = frozenset(),
        replayed: dict[int, tuple[int, ...]] | None = None) -> Tally:
    t = Tally(cap=10)
    classify(outs, acks, T, covered.__contains__, t, replayed=lambda oid: (replayed or {}).get(oid, ()))
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
    assert kinds(run([out(1)], [ack(1, off=999, copies=("0@1",))])) == {}, "counted once, by the copies query"
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


def test_a_replayed_event_acknowledged_from_its_first_copy_is_replayed_only_if_a_replay_covers_it() -> None:
    # The outbox records the replay's position (0@50); the group acknowledged the first copy (0@1) and has not
    # received the second one yet.
    t = run([out(1, off=50)], [ack(1, off=1)], replayed={1: (7,)})
    assert kinds(t) == {"replayed": 1}
    [f] = t.named[Kind.REPLAYED]
    assert f.replay_audits == (7,) and f.detail == ("acknowledged from 0@1, re-published at 0@50 by replay #7 "
                                                    "(that copy not received yet)")
    assert kinds(run([out(1, off=50)], [ack(1, off=1)], replayed={2: (7,)})) == {"duplicated": 1}, "other id"


def test_received_copies_are_left_to_the_copies_query_unless_the_outbox_position_is_one_copy_too_many() -> None:
    explained = run([out(1, off=50)], [ack(1, off=1, copies=("0@50",))], replayed={1: (7,)})
    assert kinds(explained) == {} and explained.overflow == set()
    # received 0@1 and 0@50, yet the outbox says 0@60: three copies, one replay explains two
    t = run([out(1, off=60)], [ack(1, off=1, copies=("0@50",))], replayed={1: (7,)})
    assert kinds(t) == {"duplicated": 1} and t.overflow == {1}
    assert "3 copies in Kafka, but the first publication and replay #7 account for 2" in \
        t.named[Kind.DUPLICATED][0].detail
    assert kinds(run([out(1, off=60)], [ack(1, off=1, copies=("0@50",))], replayed={1: (7, 8)})) == {}, \
        "two replays account for three copies"
    # two copies received and one replay: the copies query already counts it as duplicated
    assert kinds(run([out(1, off=60)], [ack(1, off=1, copies=("0@50", "0@55"))], replayed={1: (7,)})) == {}
