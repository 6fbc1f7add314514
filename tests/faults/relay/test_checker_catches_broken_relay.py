"""The checks can fail: a deliberately wrong relay (marks before the Kafka commit) is caught as data loss.

The wrong relay is ``python -m chaos.faulty_relay`` (test tooling): the shipped relay has no such mode."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.integration.relay.conftest import spawn, spawn_faulty
from tests.integration.relay.harness import RelayProcess, pending, verify, wait_until, write_events


def test_mark_before_commit_loses_events_and_verification_says_so(  # noqa: PLR0917
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str, topic: str,
        tmp_path: Path) -> None:
    write_events(fresh_db, topic, 300, keys=10)
    broken = spawn_faulty(relays, relay_env, tmp_path, "broken", OUTBOX_RELAY_BATCH_SIZE="40",
                          FAULTY_RELAY_BROKEN="mark_before_commit", FAULTY_RELAY_KILL_AT="mid_produce",
                          FAULTY_RELAY_KILL_BATCH="2")
    assert broken.wait(90) == -signal.SIGKILL, broken.logs()
    again = spawn(relays, relay_env, tmp_path, "again", OUTBOX_RELAY_BATCH_SIZE="40")
    wait_until(lambda: pending(fresh_db) == 0, 90, lambda: f"the table to say everything is published:\n{again.logs()}")
    assert again.stop(30) == 0
    v = verify(fresh_db, bootstrap, [topic])
    assert not v.clean and v.lost, "the independent verification must catch events marked but never committed"
    # Several shards had a batch marked but not committed when the process died: the table says "published",
    # Kafka never got them. (The per-key gap check also fires when a later row of such a key got through.)
    assert not v.duplicates and v.unpublished == 0 and v.lost, str(v)
