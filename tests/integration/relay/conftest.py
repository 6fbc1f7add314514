"""Fixtures for relay tests: a committed database, a topic, and a relay environment unique to the test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.relay.harness import FAULTY_RELAY, RelayProcess


@pytest.fixture
def relay_env(fresh_db: str, bootstrap: str) -> dict[str, str]:
    """Environment for relay processes of this test: its own database, transactional ids and checkpoints."""
    tag = uuid.uuid4().hex[:8]
    return {
        "OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX": f"relay-{tag}",
        "OUTBOX_RELAY_CHECKPOINT_TOPIC": f"ckpt-{tag}",
        "OUTBOX_RELAY_LOG_LEVEL": "INFO",
        "OUTBOX_RELAY_STATS_INTERVAL_S": "0.5",
    }


@pytest.fixture
def relays(tmp_path: Path, relay_env: dict[str, str]) -> Iterator[list[RelayProcess]]:
    """Relay processes started by the test (append to the list); all killed afterwards."""
    started: list[RelayProcess] = []
    yield started
    for r in started:
        r.kill()


def spawn(relays: list[RelayProcess], env: dict[str, str], tmp_path: Path, name: str,
          **overrides: str) -> RelayProcess:
    r = RelayProcess(env, tmp_path, name, **overrides).start()
    relays.append(r)
    return r


def spawn_faulty(relays: list[RelayProcess], env: dict[str, str], tmp_path: Path, name: str,
                 **overrides: str) -> RelayProcess:
    """Like :func:`spawn`, the relay with the fault suite's hooks (chaos/faulty_relay.py: FAULTY_RELAY_*)."""
    r = RelayProcess(env, tmp_path, name, module=FAULTY_RELAY, **overrides).start()
    relays.append(r)
    return r
