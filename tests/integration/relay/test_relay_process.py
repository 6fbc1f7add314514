"""The relay as a real process: publishes exactly once, serves metrics/health, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, pending, verify, wait_until, write_events


def test_relay_publishes_every_event_exactly_once_in_key_order(  # noqa: PLR0917
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str, topic: str,
        tmp_path: Path) -> None:
    write_events(fresh_db, topic, 600, keys=25)
    r = spawn(relays, relay_env, tmp_path, "solo", OUTBOX_RELAY_BATCH_SIZE="100")
    wait_until(lambda: pending(fresh_db) == 0, 90, lambda: f"the backlog to drain; relay log:\n{r.logs()}")
    write_events(fresh_db, topic, 200, keys=25)  # while running: picked up by polling, no NOTIFY
    wait_until(lambda: pending(fresh_db) == 0, 60, lambda: f"new events to drain; relay log:\n{r.logs()}")
    wait_until(lambda: r.get("/readyz") == 200, 10, "readyz")
    assert r.get("/healthz") == 200
    m = r.metrics()
    assert "outbox_relay_published_total" in m and "outbox_relay_leases_held 8.0" in m
    # The claim floors rose in a real process (the second round's claims proved the first round's ids final).
    wait_until(lambda: max(_floors(r.metrics()), default=0) > 0, 20, lambda: f"a claim floor above 0\n{r.metrics()}")
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 0, r.logs()
    assert time.monotonic() - t0 < 15
    v = verify(fresh_db, bootstrap, [topic])
    assert v.clean and v.events == 800, str(v)


def _floors(metrics: str) -> list[float]:
    return [float(line.rpartition(" ")[2]) for line in metrics.splitlines()
            if line.startswith("outbox_relay_claim_floor{")]


def test_an_idle_relay_is_woken_by_new_rows_instead_of_waiting_out_its_backoff(  # noqa: PLR0917
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str, topic: str,
        tmp_path: Path) -> None:
    # Idle workers sleep 10 s between empty claims here: only the waker (relay/wake.py) can make them look
    # sooner. (With OUTBOX_RELAY_WAKE_INTERVAL_S=0 this test times out: checked by hand, 2026-12-01.)
    r = spawn(relays, relay_env, tmp_path, "sleepy", OUTBOX_RELAY_POLL_MIN_S="10", OUTBOX_RELAY_POLL_MAX_S="10")
    wait_until(lambda: r.get("/readyz") == 200, 30, lambda: f"readyz\n{r.logs()}")
    wait_until(lambda: "outbox_relay_leases_held 8.0" in r.metrics(), 30, lambda: f"all shards held\n{r.logs()}")
    for _ in range(3):  # three separate commits, each after the workers went back to sleep
        write_events(fresh_db, topic, 20, keys=20)
        wait_until(lambda: pending(fresh_db) == 0, 5, lambda: f"the waker to get the rows published\n{r.logs()}")
    v = verify(fresh_db, bootstrap, [topic])
    assert v.clean and v.events == 60, str(v)
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 0, r.logs()
    assert time.monotonic() - t0 < 5, "a stop must cut the 10 s idle wait short"
