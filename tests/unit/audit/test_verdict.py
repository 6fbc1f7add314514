"""A proof says what it compared (issue 18, finding 6): a group that compared nothing while events of its topics
are in flight is inconclusive, never "zero loss proven"; the report, its JSON, its line and the CLI's exit code
agree."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from outbox.reconcile import GroupReport, Report, Verdict, Window, render_html
from relay.cli.audit import EXIT_CONFIG, EXIT_COULD_NOT_RUN, EXIT_FOUND, EXIT_INCONCLUSIVE, EXIT_OK, VERDICT_EXIT

T = datetime(2026, 12, 7, tzinfo=UTC)
WIN = Window(1, 2000, None, None, 30.0, 300.0, T, T, T)


def group(name: str = "billing", *, expected: int = 0, in_flight: int = 0, **bad: int) -> GroupReport:
    counts = {"missing": 0, "duplicated": 0, "out_of_order": 0, "stuck": 0, "dead_lettered": 0, "unexpected": 0}
    counts.update(bad)
    return GroupReport(group=name, database="db", topics=("orders",), expected=expected,
                       acknowledged=expected - counts["missing"], in_flight=in_flight, findings=(), latency_ms=(),
                       **counts)


def report(*groups: GroupReport, events: int = 0, in_flight: int = 0, stuck: int = 0) -> Report:
    return Report(generated_at=T, producer_database="db", window=WIN, algorithm="hash", bucket_bits=16,
                  events=events, groups=groups, stuck=stuck, relay_dead_lettered=0, in_flight=in_flight,
                  outbox_findings=(), backlog=(), publish_latency_ms=(), elapsed_s=0.1)


def test_a_burst_inside_the_grace_is_inconclusive_not_proven() -> None:
    r = report(group(in_flight=2000), in_flight=2000)
    d = r.to_dict()
    assert r.verdict is Verdict.INCONCLUSIVE and d["verdict"] == "inconclusive"
    assert d["groups"][0]["verdict"] == "inconclusive"
    assert d["verdict_line"] == ("verdict: INCONCLUSIVE — no proof yet: 0 events compared, 2,000 in flight "
                                 "(published within the 30s grace or not yet published); reconcile again once "
                                 "they have settled")
    assert 'class="verdict inconclusive"' in render_html(d) and "proven" not in d["verdict_line"]


def test_one_group_that_compared_nothing_makes_the_report_inconclusive() -> None:
    r = report(group("billing", expected=500), group("audit", in_flight=20), events=500, in_flight=20)
    assert r.verdict is Verdict.INCONCLUSIVE
    assert r.to_dict()["verdict_line"].startswith("verdict: INCONCLUSIVE — no proof yet for group 'audit': 500 "
                                                  "events compared, 20 in flight")


def test_a_proof_names_what_it_left_out_and_reads_as_before_without() -> None:
    partial = report(group(expected=1500, in_flight=500), events=1500, in_flight=500)
    assert partial.verdict is Verdict.PROVEN
    assert partial.to_dict()["verdict_line"] == (
        "verdict: zero loss proven — 1,500 events, 1 consumer group, 0 missing, 0 duplicated, 0 out of order; "
        "500 in flight (published within the 30s grace or not yet published), not compared")
    settled = report(group(expected=2000), events=2000)
    assert settled.to_dict()["verdict_line"] == ("verdict: zero loss proven — 2,000 events, 1 consumer group, "
                                                 "0 missing, 0 duplicated, 0 out of order")


@pytest.mark.parametrize("bad", [{"missing": 1}, {"duplicated": 1}, {"out_of_order": 1}, {"unexpected": 1}])
def test_discrepancies_win_over_inconclusive(bad: dict[str, Any]) -> None:
    r = report(group(expected=10, **bad), group("audit", in_flight=5), events=10, in_flight=5)
    assert r.verdict is Verdict.DISCREPANCIES
    assert report(group(in_flight=5), in_flight=5, stuck=1).verdict is Verdict.DISCREPANCIES


def test_an_empty_window_with_nothing_in_flight_stays_proven() -> None:
    assert report(group()).verdict is Verdict.PROVEN  # vacuous, and the report's note says so


def test_each_verdict_has_its_own_exit_code() -> None:
    assert VERDICT_EXIT == {Verdict.PROVEN: EXIT_OK, Verdict.DISCREPANCIES: EXIT_FOUND,
                            Verdict.INCONCLUSIVE: EXIT_INCONCLUSIVE}
    assert EXIT_INCONCLUSIVE == 4
    assert len({EXIT_OK, EXIT_FOUND, EXIT_COULD_NOT_RUN, EXIT_CONFIG, EXIT_INCONCLUSIVE}) == 5
    assert set(VERDICT_EXIT) == set(Verdict)
    assert replace(group(in_flight=1), expected=1).verdict is Verdict.PROVEN
