"""The supervisor turns the claim floor off when the id sequence is cached, and when the setting says so."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config import RelaySettings
from relay.supervisor import Supervisor
from tests.unit.relay.fakes import FakeCheckpointLog, FakeKafka, FakeTransport


class _Store:
    def __init__(self, cache: int) -> None:
        self.cache, self.asked = cache, 0

    def id_sequence_cache(self) -> int:
        self.asked += 1
        return self.cache


def _supervisor(store: Any, **kw: object) -> Supervisor:
    s = RelaySettings.load({"instance_id": "t", **kw}, environ={"OUTBOX_DATABASE_URL": "postgresql://h/d",
                                                               "KAFKA_BOOTSTRAP_SERVERS": "k:1"})
    k = FakeKafka()
    return Supervisor(s, store, transport_factory=lambda sh: FakeTransport(k, sh), checkpoints=FakeCheckpointLog(k))


@pytest.mark.parametrize(("cache", "setting", "on"), [(1, True, True), (20, True, False), (0, True, False),
                                                      (1, False, False)])
def test_floor_switch(cache: int, setting: bool, on: bool, caplog: pytest.LogCaptureFixture) -> None:
    store = _Store(cache)
    sup = _supervisor(store, claim_floor=setting)
    assert [sup._floor_enabled() for _ in range(3)] == [on] * 3
    assert store.asked == (1 if setting else 0), "asked once per relay, and not at all when turned off"
    assert ("CACHE is not 1" in caplog.text) == (setting and cache != 1)
