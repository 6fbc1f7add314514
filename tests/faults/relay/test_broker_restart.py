"""SIGKILL the broker in the middle of a run, keep it down for a while, then start it again: the relay
retries with backoff, loses nothing, duplicates nothing, and leaves no hanging transaction."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from stack.env import Stack
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, pending, scalar, verify, wait_until, write_events


def test_broker_hard_restart_mid_run(  # noqa: PLR0917
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str, topic: str,
        stack: Stack, tmp_path: Path) -> None:
    if stack.kafka is None:
        pytest.fail("this test restarts the broker, which needs the harness's own Kafka (not an external one)")
    # A short Kafka timeout so the outage outlasts it: the relay's own retry/re-init/recovery path runs, not
    # only librdkafka's internal retries.
    r = spawn(relays, relay_env, tmp_path, "relay", OUTBOX_RELAY_BATCH_SIZE="100", OUTBOX_RELAY_KAFKA_TIMEOUT_S="3")
    stop = threading.Event()
    written = [0]

    def writer() -> None:  # writes keep succeeding while Kafka is down: the backlog just grows
        while not stop.is_set():
            write_events(fresh_db, topic, 50, keys=30, per_txn=50)
            written[0] += 50
            stop.wait(0.05)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE published_at IS NOT NULL")
                   > 300, 60, "some events to be published before the crash")  # type: ignore[operator]
        stack.kafka.node(1).kill()  # SIGKILL; then stay down long enough for the relay's own retries to run
        before = written[0]
        wait_until(lambda: written[0] > before + 2000, 60, "writes to continue while Kafka is down")
        stack.kafka.start_node(1)
        before = written[0]
        wait_until(lambda: written[0] > before + 300, 60, "writes to continue after the restart")
    finally:
        stop.set()
        t.join(60)
    t0 = time.monotonic()
    wait_until(lambda: pending(fresh_db) == 0, 180, f"the relay to drain after the restart\n{r.logs()}")
    print(f"\ndrained {written[0]} events; {time.monotonic() - t0:.1f}s after writes stopped")
    assert r.stop(30) == 0
    log = r.log.read_text()
    assert "Connection refused" in log and '"transient failure, retrying"' in log, "the outage must be retried"
    v = verify(fresh_db, bootstrap, [topic], timeout=120)
    assert v.clean and v.events == written[0], str(v)
