"""The reconciler must be able to fail: one planted discrepancy at a time is caught, named, exit code 1;
a clean run is proven, exit code 0. Two groups: ``billing`` in its own database, ``shipping`` in the
producer's."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

import outbox
from outbox.reconcile import Kind, Options, Report, Verdict, reconcile
from outbox.schema import event, inbox
from tests.integration.audit.conftest import Scenario
from tests.integration.audit.helpers import publish_pending, send

pytestmark = pytest.mark.kafka


def named(report: Report, group: str, kind: Kind) -> list[str]:
    [g] = [g for g in report.groups if g.group == group]
    return [f.event_id for f in g.findings if f.kind is kind and f.event_id]


def counts(report: Report, group: str) -> dict[str, int]:
    [g] = [g for g in report.groups if g.group == group]
    return {k: getattr(g, k) for k in ("expected", "acknowledged", "missing", "duplicated", "out_of_order", "stuck",
                                        "dead_lettered", "unexpected")}


CLEAN = {"expected": 60, "acknowledged": 60, "missing": 0, "duplicated": 0, "out_of_order": 0, "stuck": 0,
         "dead_lettered": 0, "unexpected": 0}


def test_a_clean_run_is_proven(scenario: Scenario) -> None:
    r = scenario.reconcile()
    assert r.verdict is Verdict.PROVEN, r.to_dict()
    assert counts(r, "billing") == CLEAN and counts(r, "shipping") == CLEAN and r.events == 60
    assert r.to_dict()["verdict_line"].startswith("verdict: zero loss proven — 60 events, 2 consumer groups, "
                                                  "0 missing, 0 duplicated, 0 out of order")
    # tiny buckets force the drill-down machinery through every level; still nothing to report
    assert scenario.reconcile(bucket_bits=4, sub_bits=2).verdict is Verdict.PROVEN


def test_a_window_without_events_is_proven_with_a_note_saying_nothing_was_compared(scenario: Scenario) -> None:
    with scenario.producer.connect() as c:
        newest = c.execute(sa.select(sa.func.max(event.c.id))).scalar_one()
    empty = scenario.reconcile(from_id=newest + 1000)
    assert empty.verdict is Verdict.PROVEN and empty.events == 0
    assert any("nothing was compared" in n for n in empty.notes), empty.notes
    assert not any("nothing was compared" in n for n in scenario.reconcile().notes)


def test_a_deleted_inbox_row_is_missing(scenario: Scenario) -> None:
    with scenario.consumer.begin() as c:
        victim = c.execute(sa.delete(inbox).where(inbox.c.id == sa.select(sa.func.min(inbox.c.id) + 17)
                                                  .scalar_subquery()).returning(inbox.c.event_id)).scalar_one()
    for bits, sub in ((16, 10), (4, 2)):
        r = scenario.reconcile(bucket_bits=bits, sub_bits=sub)
        assert r.verdict is Verdict.DISCREPANCIES
        assert counts(r, "billing") == {**CLEAN, "acknowledged": 59, "missing": 1}
        assert named(r, "billing", Kind.MISSING) == [str(victim)]
        assert counts(r, "shipping") == CLEAN


def test_an_event_that_bypassed_the_relay_is_missing_for_every_group(scenario: Scenario) -> None:
    with scenario.producer.begin() as c:
        [ghost] = outbox.enqueue(c, outbox.Event(topic=scenario.topic, type="order.created", key="order-1",
                                                 data={"n": "ghost"}))
        # marked published with a plausible position, but never produced to Kafka
        c.execute(sa.update(event).where(event.c.id == ghost.id)
                  .values(published_at=sa.func.now(), kafka_partition=0, kafka_offset=999_999))
    r = scenario.reconcile()
    for g in ("billing", "shipping"):
        assert counts(r, g) == {**CLEAN, "expected": 61, "missing": 1}
        assert named(r, g, Kind.MISSING) == [str(ghost.event_id)]
    assert "published at 0@999999, never acknowledged" in r.to_dict()["groups"][0]["findings"][0]["detail"]


def test_an_event_published_twice_is_duplicated(scenario: Scenario) -> None:
    with scenario.producer.connect() as c:
        row = c.execute(sa.select(event).order_by(event.c.id).offset(5).limit(1)).one()
    send(scenario.bootstrap, [row])  # a second copy at a new offset, as a relay without exactly-once would
    scenario.consume("billing", 1)
    r = scenario.reconcile()
    assert counts(r, "billing") == {**CLEAN, "duplicated": 1}
    assert named(r, "billing", Kind.DUPLICATED) == [str(row.event_id)]
    assert counts(r, "shipping") == CLEAN, "shipping has not read the copy yet"
    assert r.verdict is Verdict.DISCREPANCIES


def test_an_ack_from_another_position_than_published_is_duplicated(scenario: Scenario) -> None:
    # the consumer saw a copy the relay never recorded (the recorded one not (yet) seen): position mismatch
    with scenario.consumer.begin() as c:
        eid = c.execute(sa.update(inbox).where(inbox.c.id == sa.select(sa.func.max(inbox.c.id)).scalar_subquery())
                        .values(kafka_offset=inbox.c.kafka_offset + 100_000).returning(inbox.c.event_id)).scalar_one()
    r = scenario.reconcile(bucket_bits=5, sub_bits=2)
    assert counts(r, "billing") == {**CLEAN, "duplicated": 1}
    assert named(r, "billing", Kind.DUPLICATED) == [str(eid)]


def test_a_reordering_is_out_of_order(scenario: Scenario) -> None:
    with scenario.producer.begin() as c:
        late = outbox.enqueue(c, *[outbox.Event(topic=scenario.topic, type="order.updated", key="order-2",
                                                data={"n": i}) for i in range(2)])
    assert [s.key_seq for s in late] == [11, 12]
    publish_pending(scenario.producer, scenario.bootstrap, order=lambda rows: list(reversed(rows)))
    scenario.consume_all(2)
    r = scenario.reconcile()
    for g in ("billing", "shipping"):
        assert counts(r, g) == {**CLEAN, "expected": 62, "acknowledged": 62, "out_of_order": 1}
        assert named(r, g, Kind.OUT_OF_ORDER) == [str(late[0].event_id)]
    [f] = [f for f in r.groups[0].findings if f.kind is Kind.OUT_OF_ORDER]
    assert f.key == "order-2" and f.key_seq == 11 and f.detail == "acknowledged after seq 12"
    unnamed = scenario.reconcile(cap=0)  # counts stay exact when no event is named
    assert counts(unnamed, "billing")["out_of_order"] == 1 and not unnamed.groups[0].findings


def test_a_stuck_row_is_stuck(scenario: Scenario) -> None:
    with scenario.producer.begin() as c:
        [stuck] = outbox.enqueue(c, outbox.Event(topic=scenario.topic, type="order.created", key="order-3",
                                                 data={"n": "stuck"}))
    assert scenario.reconcile().verdict is Verdict.PROVEN, "young pending rows are in flight, not stuck"
    r = scenario.reconcile(stuck_after=timedelta(0))
    assert r.verdict is Verdict.DISCREPANCIES and r.stuck == 1
    assert counts(r, "billing") == {**CLEAN, "stuck": 1}
    assert named(r, "billing", Kind.STUCK) == [str(stuck.event_id)]
    assert r.outbox_findings[0].event_id == str(stuck.event_id)


def test_a_consumer_dead_letter_is_recorded_not_lost(scenario: Scenario) -> None:
    with scenario.consumer.begin() as c:
        eid = c.execute(sa.update(inbox).where(inbox.c.id == sa.select(sa.func.min(inbox.c.id)).scalar_subquery())
                        .values(outcome="dead_lettered", error="ValueError: boom", attempts=3)
                        .returning(inbox.c.event_id)).scalar_one()
    r = scenario.reconcile()
    assert r.verdict is Verdict.PROVEN
    assert counts(r, "billing") == {**CLEAN, "dead_lettered": 1}
    assert named(r, "billing", Kind.DEAD_LETTERED) == [str(eid)]
    assert r.to_dict()["verdict_line"].endswith(", 1 dead-lettered (recorded)")


def test_an_ack_without_outbox_row_is_unexpected_unless_a_checkpoint_proved_it(scenario: Scenario) -> None:
    first = scenario.reconcile(checkpoint=True)
    cps = {g.group: g.checkpoint for g in first.groups}
    assert cps["billing"] and cps["billing"]["expected"] == 60, cps
    with scenario.producer.begin() as c:
        lo, hi = c.execute(sa.select(sa.func.min(event.c.id), sa.func.max(event.c.id))).one()
        c.execute(sa.delete(event).where(event.c.id == lo + 10))  # pruned: covered by both checkpoints
    r = scenario.reconcile(from_id=lo, to_id=hi)
    assert r.verdict is Verdict.PROVEN and counts(r, "billing")["expected"] == 59
    with scenario.producer.begin() as c:
        c.execute(sa.text("DELETE FROM outbox.reconcile_checkpoint"))
    r = scenario.reconcile(from_id=lo, to_id=hi)
    assert counts(r, "billing")["unexpected"] == 1 and r.verdict is Verdict.DISCREPANCIES
    [f] = [f for f in r.groups[0].findings if f.kind is Kind.UNEXPECTED]
    assert f.outbox_id == lo + 10 and f.detail == "no outbox row has this id"


def test_in_flight_events_are_not_missing(scenario: Scenario) -> None:
    with scenario.producer.begin() as c:  # the first 60 settled ten minutes ago
        c.execute(sa.update(event).values(created_at=event.c.created_at - timedelta(minutes=10),
                                          published_at=event.c.published_at - timedelta(minutes=10)))
        outbox.enqueue(c, outbox.Event(topic=scenario.topic, type="x", key="order-4", data={}))
    publish_pending(scenario.producer, scenario.bootstrap)  # published just now, nobody consumed it yet
    r = scenario.reconcile(grace=timedelta(minutes=1))
    assert r.verdict is Verdict.PROVEN and counts(r, "billing") == CLEAN and r.in_flight == 1
    assert counts(scenario.reconcile(), "billing")["missing"] == 1, "without grace it is missing"


def test_no_subscriptions_means_it_could_not_run(producer_engine: sa.Engine) -> None:
    from outbox.errors import ReconcileError

    with pytest.raises(ReconcileError, match="no consumer group has registered a subscription"):
        reconcile(producer_engine)


def test_a_group_without_any_acknowledgement_gets_a_hint(scenario: Scenario) -> None:
    scenario.reconcile(checkpoint=True)  # mirrors billing's subscription into the producer database
    r = reconcile(scenario.producer, options=Options(grace=timedelta(0)))  # ... where billing has no inbox rows
    assert counts(r, "billing")["missing"] == 60
    assert any("'billing' has no acknowledgement at all" in n and "--inbox-database-url" in n for n in r.notes)


def test_a_time_window_becomes_the_id_range_that_covers_it(scenario: Scenario) -> None:
    from datetime import UTC, datetime

    with scenario.producer.begin() as c:
        ids = list(c.execute(sa.select(event.c.id).order_by(event.c.id)).scalars())
        c.execute(sa.update(event).where(event.c.id <= ids[29])
                  .values(created_at=event.c.created_at - timedelta(hours=2)))
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    recent = scenario.reconcile(since=hour_ago)
    old = scenario.reconcile(until=hour_ago)
    assert (recent.window.id_lo, recent.window.id_hi) == (ids[30], ids[-1])
    assert (old.window.id_lo, old.window.id_hi) == (ids[0], ids[29])
    for r in (recent, old):
        assert r.verdict is Verdict.PROVEN and counts(r, "billing") == {**CLEAN, "expected": 30, "acknowledged": 30}
    empty = scenario.reconcile(since=datetime.now(UTC) + timedelta(hours=1))
    assert empty.events == 0 and empty.window.id_lo is None
