"""The fault suite. The small tier runs in `make test`; the full run and the broken relay run in `make chaos`.

Each run verifies independently of our code (Kafka's ConsoleConsumer vs the outbox table, TransactionsCommand
find-hanging) and also asks our reconciler, and the two must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.faults import FULL, SMALL
from chaos.run import run

REPO = Path(__file__).resolve().parents[2]


def _assert_clean(results: dict[str, object]) -> None:
    # A string, so pytest prints all of it (a dict message is cut to one line, which hid the examples in CI).
    summary = json.dumps({k: v for k, v in results.items() if k != "reconciler_output"}, indent=1, default=str)
    assert results["lost"] == 0, summary
    assert results["duplicates"] == 0, summary
    assert results["order_violations"] == 0, summary
    assert results["phantoms"] == 0, summary
    assert results["hanging_transactions"] == 0, summary
    assert results["independent_check"] == "pass", summary
    assert results["reconciler_verdict"] == "proven", results["reconciler_output"]
    assert results["writer_failures_other"] == 0, (
        f"a business write failed for a reason other than a DB restart: {results.get('writer_errors')}")


@pytest.mark.timeout(600)
def test_small_tier_loses_nothing_under_faults(tmp_path: Path) -> None:
    outcome = run(SMALL, tmp_path / "run", seed=7)
    r = outcome.results
    _assert_clean(r)
    assert r["events"] > 2000  # type: ignore[operator]
    assert r["relay_kills"] >= SMALL.relay_kills
    assert r["broker_kills"] >= SMALL.broker_bounces
    assert r["db_restarts"] >= SMALL.db_restarts
    assert r["outage_seconds"] >= SMALL.outage_s  # type: ignore[operator]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 5-7 minutes on a quiet machine; past 600 s on a loaded one, still verifying
def test_a_broken_relay_is_caught(tmp_path: Path) -> None:
    outcome = run(SMALL, tmp_path / "broken", seed=3, broken=True)
    r = outcome.results
    assert r["independent_check"] == "fail", r
    assert int(r["lost"]) + int(r["duplicates"]) > 0, r  # type: ignore[call-overload]
    assert r["reconciler_verdict"] == "discrepancies", r["reconciler_output"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_run_meets_the_goal(tmp_path: Path) -> None:
    outcome = run(FULL, tmp_path / "full", seed=1)
    r = outcome.results
    (REPO / "chaos-results.json").write_text(json.dumps(r, indent=2, default=str))
    _assert_clean(r)
    assert r["events"] >= 200_000  # type: ignore[operator]
    assert r["relay_kills"] >= 30  # type: ignore[operator]
    assert r["broker_kills"] >= 3  # type: ignore[operator]
    assert r["db_restarts"] >= 3  # type: ignore[operator]
    assert r["outage_seconds"] >= 120  # type: ignore[operator]
