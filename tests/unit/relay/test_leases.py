"""Fair shares and the per-tick plan (relay.leases) without a database."""

from __future__ import annotations

from outbox.store.relay import Lease
from relay.leases import plan, quota


def lease(shard: int, owner: str | None, expires_in: float | None = 2.0) -> Lease:
    return Lease(shard, owner, 1, None, None, None if owner is None else expires_in)


def test_quotas_are_even_and_add_up() -> None:
    for n in range(1, 9):
        live = [f"i{j}" for j in range(n)]
        qs = [quota(me, live, 8) for me in live]
        assert sum(qs) == 8 and max(qs) - min(qs) <= 1
    assert quota("b", ["a"], 8) == 4  # self counts even before the others see it


def test_fresh_instance_takes_free_shards_up_to_its_share() -> None:
    leases = [lease(s, None) for s in range(8)]
    p = plan("a", ["a", "b"], leases, {}, 8)
    assert p.acquire == (0, 1, 2, 3) and p.release == ()


def test_surplus_is_released_when_a_peer_joins() -> None:
    held = {s: 1 for s in range(8)}
    p = plan("a", ["a", "b"], [lease(s, "a") for s in range(8)], held, 8)
    assert p.release == (4, 5, 6, 7) and p.acquire == ()


def test_dead_peer_leases_are_taken_when_expired_and_awaited_otherwise() -> None:
    leases = [lease(s, "a") for s in range(4)] + [lease(4, "dead", -0.1), lease(5, "dead", 0.7),
                                                  lease(6, "dead", 1.5), lease(7, None)]
    held = {s: 1 for s in range(4)}
    p = plan("a", ["a"], leases, held, 8)
    assert p.acquire == (4, 7)
    assert p.wake_in_s == 0.7, "tick again the moment the next dead lease expires"


def test_live_peer_leases_are_not_awaited() -> None:
    p = plan("a", ["a", "b"], [lease(s, "b") for s in range(8)], {}, 8)
    assert p.acquire == () and p.wake_in_s is None  # b releases its surplus; a takes it next tick


def test_own_lease_unknown_to_this_process_is_taken_back() -> None:
    p = plan("a", ["a"], [lease(0, "a", 2.5)] + [lease(s, None) for s in range(1, 4)], {}, 4)
    assert p.acquire == (0, 1, 2, 3)
