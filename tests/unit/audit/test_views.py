"""Verdict line, terminal and HTML views, time parsing: rendered from the JSON form alone."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from outbox.errors import ConfigError
from outbox.reconcile import print_report, render_html, verdict_line
from outbox.reconcile.config import parse_time
from outbox.reconcile.render import latency_label, percentile


def group(name: str, **kw: int) -> dict[str, Any]:
    base = {k: 0 for k in ("expected", "acknowledged", "missing", "duplicated", "replayed", "out_of_order", "stuck",
                           "dead_lettered", "unexpected", "in_flight")}
    base.update(expected=10_000, acknowledged=10_000)
    base.update(kw)
    bad = any(base[k] for k in ("missing", "duplicated", "out_of_order", "stuck", "unexpected"))
    return {"group": name, "database": "db", "topics": ["orders"], "verdict": "discrepancies" if bad else "proven",
            "findings": [], "delivery_latency_ms": [[3, 10], [4, 9_980], [9, 10]], "checkpoint": None, **base}


def report(*groups: dict[str, Any]) -> dict[str, Any]:
    tot = {k: sum(g[k] for g in groups) for k in ("expected", "acknowledged", "missing", "duplicated", "replayed",
                                                  "out_of_order", "unexpected", "dead_lettered")}
    d = {"verdict": "proven" if all(g["verdict"] == "proven" for g in groups) else "discrepancies",
         "events": 10_000, "groups": list(groups), "totals": {**tot, "stuck": 0, "relay_dead_lettered": 0,
                                                               "in_flight": 0},
         "producer_database": "postgresql://x/[db]", "generated_at": "2026-01-01T00:00:00+00:00", "elapsed_s": 1.5,
         "window": {"id_lo": 1, "id_hi": 10_000, "since": None, "until": None, "grace_s": 30,
                    "stuck_after_s": 300, "cutoff": "2026-01-01T00:00:00+00:00"},
         "digest": {"algorithm": "hash", "bucket_bits": 16}, "outbox_findings": [], "notes": [], "replays": [],
         "charts": {"backlog": [["2026-01-01T00:00:00+00:00", 5, 2], ["2026-01-01T00:01:00+00:00", 9, 9]],
                    "publish_latency_ms": [[2, 100]]}}
    d["verdict_line"] = verdict_line(d)
    return d


def test_verdict_lines() -> None:
    assert verdict_line(report(group("a"), group("b"))) == (
        "verdict: zero loss proven — 10,000 events, 2 consumer groups, 0 missing, 0 duplicated, 0 out of order")
    assert verdict_line(report(group("a", missing=2, acknowledged=9_998))).startswith(
        "verdict: DISCREPANCIES — 10,000 events, 1 consumer group, 2 missing, 0 duplicated, 0 out of order, 0 stuck")


def test_terminal_view_ends_with_the_verdict() -> None:
    buf = io.StringIO()
    print_report(report(group("billing"), group("[b]")), Console(file=buf, width=200))
    text = buf.getvalue()
    assert text.strip().splitlines()[-1].startswith("verdict: zero loss proven")
    assert "[b]" in text and "postgresql://x/[db]" in text, "data is never read as Rich markup"


def test_html_is_self_contained_with_two_charts() -> None:
    html = render_html(report(group("billing", missing=1, acknowledged=9_999)))
    assert html.count("<svg") == 2 and "src=" not in html and "href=" not in html
    assert 'class="n bad">1<' in html and "DISCREPANCIES" in html
    empty = report(group("x"))
    empty["charts"] = {"backlog": [], "publish_latency_ms": []}
    empty["groups"][0]["delivery_latency_ms"] = []
    assert "no data" in render_html(empty)


def test_latency_labels_and_percentiles() -> None:
    assert [latency_label(k) for k in (0, 4, 10, 17)] == ["1ms", "16ms", "1.024s", "2min"]
    assert percentile([[3, 10], [4, 9_980], [9, 10]], 0.5) == "≤32ms"
    assert percentile([[3, 10], [4, 9_980], [9, 10]], 0.9995) == "≤1.024s"
    assert percentile([], 0.5) == "-"


def test_parse_time() -> None:
    assert parse_time(None, "--since") is None
    assert parse_time("2026-01-02T03:04:05", "--since") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ago = parse_time("2h", "--since")
    assert ago is not None and abs((datetime.now(UTC) - ago) - timedelta(hours=2)) < timedelta(seconds=5)
    with pytest.raises(ConfigError, match="--since"):
        parse_time("yesterday", "--since")


def with_replay(d: dict[str, Any]) -> dict[str, Any]:
    d["replays"] = [{"audit_id": 7, "actor": "jane [INC-4711]", "created_at": "2026-01-01T00:00:00+00:00",
                     "event_count": 15, "ids_in_window": 15, "id_runs_total": 1, "id_runs": [[100, 114]]}]
    d["groups"][0]["findings"] = [{"kind": "replayed", "outbox_id": 100, "event_id": "e-100", "topic": "orders",
                                   "key": "k", "key_seq": 1, "detail": "acknowledged from 0@1, received again from "
                                   "0@50: re-published by replay #7", "replay_audits": [7]}]
    return d


def test_replays_show_as_their_own_column_and_section_not_as_discrepancies() -> None:
    d = with_replay(report(group("billing", replayed=15)))
    buf = io.StringIO()
    print_report(d, Console(file=buf, width=250))
    text = buf.getvalue()
    assert "replayed" in text and "re-published by replay #7" in text
    assert "replay #7 by jane [INC-4711] at 2026-01-01T00:00:00+00:00: 15 of its 15 re-queued events in this " \
           "window (ids 100..114)" in text, "actor text is never read as Rich markup"
    assert text.strip().splitlines()[-1].endswith("0 out of order, 15 replayed (audited)")
    html = render_html(d)
    assert '<td class="n">15</td>' in html and "<h2>Replays</h2><ul><li>replay #7 by jane [INC-4711]" in html
    assert 'class="n bad">15' not in html and "zero loss proven" in html


def test_a_v1_report_without_replays_still_renders() -> None:
    d = report(group("billing"))
    del d["replays"], d["groups"][0]["replayed"], d["totals"]["replayed"]
    buf = io.StringIO()
    print_report(d, Console(file=buf, width=200))
    assert "No replay re-queued events" in render_html(d) and "replayed" in buf.getvalue()


def test_discrepancies_are_listed_before_replays_in_the_terminal() -> None:
    replays = [{"kind": "replayed", "outbox_id": i, "event_id": f"e-{i}", "topic": "orders", "key": "k",
                "key_seq": i, "detail": "re-published by replay #7", "replay_audits": [7]} for i in range(25)]
    a = {**group("a", replayed=25), "findings": replays}
    b = {**group("b", missing=1, acknowledged=9_999), "findings": [
        {"kind": "missing", "outbox_id": 99, "event_id": "lost-one", "topic": "orders", "key": "k", "key_seq": 1,
         "detail": "published, never acknowledged"}]}
    buf = io.StringIO()
    print_report(report(a, b), Console(file=buf, width=250))
    assert "lost-one" in buf.getvalue() and "… 6 more" in buf.getvalue()
