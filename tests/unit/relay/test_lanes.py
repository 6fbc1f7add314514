"""A shard's transactions alternate between its producers; every takeover fences both ids (docs/decisions/017)."""

from __future__ import annotations

import pytest

from outbox.errors import ConfigError, FencedError, KafkaUnavailableError
from relay.config import RelaySettings
from relay.kafka.lanes import LaneTransport, shard_transport
from relay.ports import OutRecord
from tests.unit.relay.fakes import FakeKafka, FakeTransport


def _rec(ref: int) -> OutRecord:
    return OutRecord(ref=ref, topic="t", key=b"k", value=b"v", headers=())


def _txn(t: LaneTransport, ref: int) -> None:
    t.begin()
    t.send(_rec(ref))
    t.flush()
    t.send_checkpoint(0, b"0", str(ref).encode())
    t.commit()


def test_transactions_alternate_between_the_lanes_in_order() -> None:
    k = FakeKafka()
    a, b = FakeTransport(k, 10), FakeTransport(k, 11)
    t = LaneTransport([a, b])
    t.init()
    used = []
    for ref in range(1, 6):
        _txn(t, ref)
        used.append(t.current)
    assert used == [0, 1, 0, 1, 0]
    assert k.published() == [1, 2, 3, 4, 5]
    assert k.checkpoints[b"0"] == [b"1", b"2", b"3", b"4", b"5"]  # the last checkpoint is the last batch


def test_an_aborted_transaction_also_hands_over_to_the_other_lane() -> None:
    k = FakeKafka()
    t = LaneTransport([FakeTransport(k, 10), FakeTransport(k, 11)])
    t.init()
    t.begin()
    t.send(_rec(1))
    t.abort()
    _txn(t, 2)
    assert t.current == 1 and k.published() == [2]


def test_init_fences_a_zombie_on_either_lane() -> None:
    k = FakeKafka()
    old = LaneTransport([FakeTransport(k, 10), FakeTransport(k, 11)])
    old.init()
    _txn(old, 1)
    old.begin()  # the zombie's open transaction is on lane 1
    old.send(_rec(2))
    LaneTransport([FakeTransport(k, 10), FakeTransport(k, 11)]).init()
    with pytest.raises(FencedError):
        old.commit()
    assert k.published() == [1]


def test_one_producer_per_shard_still_fences_the_second_id_and_closes_it() -> None:
    k = FakeKafka()
    zombie = FakeTransport(k, 11)  # ran with two producers per shard
    zombie.init()
    zombie.begin()
    fence = FakeTransport(k, 11)
    t = LaneTransport([FakeTransport(k, 10)], fence_only=[fence])
    t.init()
    assert fence.closed
    with pytest.raises(FencedError):
        zombie.commit()
    _txn(t, 1)
    _txn(t, 2)
    assert t.current == 0 and k.published() == [1, 2]


def test_a_failed_fence_fails_init_and_closes_the_fencing_producer() -> None:
    k = FakeKafka(fail_init=[KafkaUnavailableError("coordinator not available (fake)")])
    fence = FakeTransport(k, 11)
    t = LaneTransport([FakeTransport(k, 10)], fence_only=[fence])
    with pytest.raises(KafkaUnavailableError):
        t.init()
    assert fence.closed


def test_the_recovery_probe_runs_on_the_last_lane_so_the_first_batch_does_not_wait_for_its_abort() -> None:
    k = FakeKafka()
    a, b = FakeTransport(k, 10), FakeTransport(k, 11)
    t = LaneTransport([a, b])
    t.init()
    b.my_epoch = -5  # a probe on lane 1 now fails as fenced; lane 0 would not
    with pytest.raises(FencedError):
        t.probe_end(0, b"0.open", b"probe")
    t.begin()
    assert t.current == 0


def test_no_lanes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one lane"):
        LaneTransport([])


@pytest.mark.parametrize(("n", "lane_ids", "fence_ids"), [
    (2, ["p-3", "p-3.1"], []),
    (1, ["p-3"], ["p-3.1"]),
])
def test_the_relay_builds_its_lanes_and_fences_from_the_setting(n: int, lane_ids: list[str],
                                                               fence_ids: list[str]) -> None:
    s = RelaySettings.load({"producers_per_shard": n, "transactional_id_prefix": "p"},
                           environ={"OUTBOX_DATABASE_URL": "postgresql+psycopg://u@h/d",
                                    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    t = shard_transport(s, 3)
    try:
        assert [x._tid for x in t._lanes] == lane_ids  # type: ignore[attr-defined]
        assert [x._tid for x in t._fence_only] == fence_ids  # type: ignore[attr-defined]
    finally:
        t.close()


def test_the_setting_takes_one_or_two() -> None:
    env = {"OUTBOX_DATABASE_URL": "postgresql+psycopg://u@h/d", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    assert RelaySettings.load({}, environ=env).producers_per_shard == 2
    for bad in (0, 3):
        with pytest.raises(ConfigError, match="OUTBOX_RELAY_PRODUCERS_PER_SHARD"):
            RelaySettings.load({}, environ={**env, "OUTBOX_RELAY_PRODUCERS_PER_SHARD": str(bad)})
