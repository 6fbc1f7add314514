"""Audited replays in the reconciler, without a database: id lookup, copy counting, the report's form."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace as Row

from outbox.reconcile.drill import Tally
from outbox.reconcile.model import Finding, Kind, Replay, verdict_line
from outbox.reconcile.replays import Replays, bucket_fixes, fold_copies
from outbox.reconcile.signing import seal, verify
from outbox.store.audit_copies import Copies, ReplayAudit, _disjoint, multirange

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
KEY = b"a-sixteen-char-key!"


def audit(aid: int, *runs: tuple[int, int]) -> ReplayAudit:
    return ReplayAudit(aid, "jane (INC-4711)", T0, sum(b - a + 1 for a, b in runs), tuple(runs))


def test_ids_are_looked_up_per_run_and_per_audit() -> None:
    r = Replays((audit(7, (10, 19), (30, 30), (40, 49)), audit(9, (15, 35))))
    assert [r.covering(i) for i in (9, 10, 15, 19, 20, 30, 31, 36, 40, 49, 50)] == [
        (), (7,), (7, 9), (7, 9), (9,), (7, 9), (9,), (), (7,), (7,), ()]
    assert not Replays() and Replays().covering(5) == () and r


def test_runs_are_merged_and_written_as_a_multirange() -> None:
    assert _disjoint([(5, 6), (1, 3), (4, 4), (9, 12), (10, 11)]) == ((1, 6), (9, 12))
    assert multirange([(1, 6), (9, 9)]) == "{[1,6],[9,9]}" and multirange([]) == "{}"


def copy_row(oid: int, kind: str, audits: tuple[int, ...], other: tuple[str, ...] = ("0@50",)) -> Row:
    return Row(outbox_id=oid, event_id=uuid.UUID(int=oid), topic="orders", key=b"k", key_seq=oid, ack_partition=0,
               ack_offset=oid, other=list(other), audits=list(audits), kind=kind)


def test_copies_are_counted_by_kind_and_named_with_their_replay() -> None:
    t = Tally(cap=10)
    fold_copies(t, Copies({"replayed": 5, "duplicated": 2},
                          [copy_row(1, "duplicated", ()), copy_row(2, "duplicated", (7,), ("0@50", "0@51")),
                           copy_row(3, "replayed", (7,))], {}))
    assert t.counts[Kind.REPLAYED] == 5 and t.counts[Kind.DUPLICATED] == 2, "counts are the query's exact totals"
    [rep] = t.named[Kind.REPLAYED]
    assert rep.replay_audits == (7,) and rep.detail == "acknowledged from 0@3, received again from 0@50: " \
                                                       "re-published by replay #7"
    d1, d2 = t.named[Kind.DUPLICATED]
    assert d1.detail == "acknowledged from 0@1, received again from 0@50" and d1.replay_audits == ()
    assert d2.detail.endswith("3 copies in Kafka, but the first publication and replay #7 account for 2")


def test_a_replay_the_drill_down_found_one_copy_short_moves_to_duplicated() -> None:
    t = Tally(cap=10)
    t.overflow.add(3)
    t.add(Kind.DUPLICATED, None)  # what classify counted for id 3
    fold_copies(t, Copies({"replayed": 2}, [copy_row(3, "replayed", (7,)), copy_row(4, "replayed", (7,))], {}))
    assert t.counts[Kind.REPLAYED] == 1 and t.counts[Kind.DUPLICATED] == 1
    assert [f.outbox_id for f in t.named[Kind.REPLAYED]] == [4]


def test_sub_bucket_fixes_combine_into_buckets() -> None:
    assert bucket_fixes({0: 0b01, 1: 0b10, 64: 0b100, 130: 0b1}, 6) == {0: 0b11, 1: 0b100, 2: 0b1}


def test_findings_name_their_replays_only_when_replayed() -> None:
    base = Finding(Kind.MISSING, 1, "e", "orders", "k", 1, "x")
    assert "replay_audits" not in base.to_dict(), "findings of other kinds keep their v1 form"
    rep = Finding(Kind.REPLAYED, 1, "e", "orders", "k", 1, "x", replay_audits=(7, 9))
    assert rep.to_dict()["replay_audits"] == [7, 9] and rep.to_dict()["kind"] == "replayed"


def test_the_replays_section_lists_runs_inside_the_window() -> None:
    runs = tuple((i * 10, i * 10 + 4) for i in range(25))
    d = Replay(7, "jane", T0, 1_000, runs).to_dict()
    assert d["ids_in_window"] == 125 and d["id_runs_total"] == 25 and len(d["id_runs"]) == 20
    assert d["id_runs"][0] == [0, 4] and d["created_at"] == T0.isoformat()


def report(replayed: int, duplicated: int = 0) -> dict[str, object]:
    g = {"group": "billing", "replayed": replayed, "duplicated": duplicated, "missing": 0}
    d: dict[str, object] = {
        "format": "kafka-outbox/reconcile-report/v2", "events": 60, "groups": [g],
        "verdict": "discrepancies" if duplicated else "proven",
        "totals": {"missing": 0, "duplicated": duplicated, "replayed": replayed, "out_of_order": 0, "stuck": 0,
                   "unexpected": 0, "dead_lettered": 0, "relay_dead_lettered": 0},
        "replays": [Replay(7, "jane", T0, replayed, ((1, replayed),)).to_dict()]}
    d["verdict_line"] = verdict_line(d)
    return d


def test_the_verdict_line_counts_replays_apart_from_duplicates() -> None:
    assert report(15)["verdict_line"] == ("verdict: zero loss proven — 60 events, 1 consumer group, 0 missing, "
                                          "0 duplicated, 0 out of order, 15 replayed (audited)")
    assert str(report(15, 1)["verdict_line"]).endswith("0 stuck, 0 unexpected, 15 replayed (audited)")
    assert "replayed" not in str(report(0)["verdict_line"])


def test_editing_replay_counts_or_the_replays_section_breaks_the_seal() -> None:
    for edit, section in ((lambda d: d["groups"][0].update(replayed=0, duplicated=15), "groups[billing]"),
                          (lambda d: d["replays"][0].update(actor="someone else"), "replays")):
        d = seal(report(15), KEY)
        assert verify(d, KEY).ok
        edit(d)
        v = verify(d, KEY)
        assert not v.ok and section in v.reasons[0] and any("signature mismatch" in r for r in v.reasons)
