"""Issue 18, finding 6: right after a burst, every event is still inside the grace, so a reconcile compares
nothing. It used to say "verdict: zero loss proven — 0 events" and exit 0; it now says it proved nothing (exit 4),
in every form of the report, and the same events after the grace are proven."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from outbox.reconcile import Verdict
from relay.cli.audit import EXIT_INCONCLUSIVE, EXIT_OK
from tests.integration.audit.conftest import Scenario
from tests.integration.audit.helpers import write_orders
from tests.integration.audit.test_cli import dbs, outbox_cli

pytestmark = pytest.mark.kafka


def test_a_burst_inside_the_grace_is_inconclusive_and_proven_after_it(scenario: Scenario, tmp_path: Path) -> None:
    # The scenario has just published 60 events and both groups consumed them: all inside the default 30 s grace.
    rj, rh = tmp_path / "r.json", tmp_path / "r.html"
    code, out = outbox_cli("reconcile", *dbs(scenario), "-o", str(rj), "--html", str(rh))
    last = out.strip().splitlines()[-1]
    assert code == EXIT_INCONCLUSIVE == 4, out
    assert last == ("verdict: INCONCLUSIVE — no proof yet: 0 events compared, 60 in flight (published within the "
                    "30s grace or not yet published); reconcile again once they have settled"), out
    assert "proven" not in last and "zero loss" not in out, out
    d = json.loads(rj.read_text(encoding="utf-8"))
    assert d["verdict"] == "inconclusive" and d["verdict_line"] == last and d["events"] == 0, d
    assert [g["verdict"] for g in d["groups"]] == ["inconclusive", "inconclusive"], d["groups"]
    assert d["format"] == "kafka-outbox/reconcile-report/v3"
    html = rh.read_text(encoding="utf-8")
    assert last in html and 'class="verdict inconclusive"' in html and "zero loss proven" not in html
    assert scenario.reconcile(grace=timedelta(seconds=30)).verdict is Verdict.INCONCLUSIVE  # the library's API

    # The same events once a (short) grace has passed: polled, never slept.
    deadline = time.monotonic() + 30
    while (code := outbox_cli("reconcile", *dbs(scenario), "--grace", "2")[0]) == EXIT_INCONCLUSIVE:
        assert time.monotonic() < deadline, "the events never left a 2 s grace"
    code, out = outbox_cli("reconcile", *dbs(scenario), "--grace", "2")
    assert code == EXIT_OK, out
    assert out.strip().splitlines()[-1] == ("verdict: zero loss proven — 60 events, 2 consumer groups, 0 missing, "
                                            "0 duplicated, 0 out of order"), out


def test_a_proof_names_the_events_it_left_out(scenario: Scenario) -> None:
    write_orders(scenario.producer, scenario.topic, 7)  # committed, not yet published: in flight, not stuck
    code, out = outbox_cli("reconcile", *dbs(scenario), "--grace", "0", "--format", "json")
    d = json.loads(out)
    assert code == EXIT_OK and d["verdict"] == "proven" and d["events"] == 60, out
    assert d["verdict_line"].endswith("; 7 in flight (published within the 0s grace or not yet published), "
                                      "not compared"), d["verdict_line"]
