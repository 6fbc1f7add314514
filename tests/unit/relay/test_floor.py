"""The claim floor's bookkeeping (relay/floor.py): it only rises past rows a final snapshot proved complete."""

from __future__ import annotations

from outbox.store.relay import ClaimSnapshot
from relay.floor import MAX_CANDIDATES, ClaimFloor

LIMIT = 100


def snap(xmin: int, horizon: int, gen: int = 0) -> ClaimSnapshot:
    return ClaimSnapshot(xmin, horizon, gen)


def test_a_fresh_floor_claims_from_the_bottom_and_never_matches_a_generation() -> None:
    f = ClaimFloor()
    assert f.bound() == (0, -1)


def test_the_floor_waits_until_a_later_snapshot_proves_the_range_complete() -> None:
    f = ClaimFloor()
    f.claimed(50, 10, LIMIT, snap(xmin=1000, horizon=1005))  # rows up to 50, transactions < 1005 may still commit
    f.finished(None)
    assert f.bound() == (0, 0), "not proven yet: a transaction below horizon 1005 may still commit a lower id"
    f.claimed(60, 5, LIMIT, snap(xmin=1004, horizon=1010))
    f.finished(None)
    assert f.floor == 0, "xmin 1004 < 1005: still not proven"
    f.claimed(70, 5, LIMIT, snap(xmin=1005, horizon=1012))  # every transaction below 1005 has ended
    f.finished(None)
    assert f.floor == 50


def test_a_full_claim_only_proves_up_to_its_last_row() -> None:
    f = ClaimFloor()
    f.claimed(500, 10, LIMIT, snap(1, 2))
    f.finished(None)
    f.claimed(120, LIMIT, LIMIT, snap(5, 6))  # a late row batch: full, stopped at 120 < 500
    f.finished(None)
    assert f.floor == 120


def test_the_floor_stays_below_the_first_row_the_batch_did_not_finish() -> None:
    f = ClaimFloor()
    f.claimed(40, 3, LIMIT, snap(1, 2))
    f.finished(None)
    f.claimed(90, 5, LIMIT, snap(3, 4))
    f.finished(first_unfinished=31)  # refused or set aside: must be claimed again
    assert f.floor == 30
    f.claimed(95, 2, LIMIT, snap(5, 6))
    f.finished(first_unfinished=None)
    assert f.floor == 90, "once it is done, the floor moves on"


def test_the_floor_never_goes_down_and_an_unfinished_batch_proves_nothing() -> None:
    f = ClaimFloor()
    f.claimed(40, 3, LIMIT, snap(1, 2))
    f.claimed(80, 3, LIMIT, snap(3, 4))
    f.finished(None)
    assert f.floor == 40
    f.claimed(90, 3, LIMIT, snap(5, 6))  # its batch fails: finished() is never called
    f.claimed(95, 3, LIMIT, snap(5, 7))
    f.finished(first_unfinished=10)
    assert f.floor == 40


def test_a_new_requeue_generation_drops_the_floor_and_its_candidates() -> None:
    f = ClaimFloor()
    f.claimed(40, 3, LIMIT, snap(1, 2, gen=0))
    f.claimed(80, 3, LIMIT, snap(3, 4, gen=0))
    f.finished(None)
    assert f.bound() == (40, 0)
    f.claimed(10, 3, LIMIT, snap(5, 6, gen=1))  # a DLQ retry re-queued old rows; this claim ran from 0
    f.finished(None)
    assert f.bound() == (0, 1)


def test_reset_and_disabled() -> None:
    f = ClaimFloor()
    f.claimed(40, 3, LIMIT, snap(1, 2))
    f.claimed(80, 3, LIMIT, snap(3, 4))
    f.finished(None)
    f.reset()
    assert f.bound() == (0, -1)
    off = ClaimFloor(enabled=False)
    off.claimed(40, 3, LIMIT, snap(1, 2))
    off.claimed(80, 3, LIMIT, snap(3, 4))
    off.finished(None)
    assert off.bound() == (0, -1)


def test_candidates_are_bounded_while_a_long_transaction_holds_xmin() -> None:
    f = ClaimFloor()
    for i in range(1, 3 * MAX_CANDIDATES):
        f.claimed(i * 10, 1, LIMIT, snap(xmin=1, horizon=100 + i))
        f.finished(None)
    assert f.floor == 0 and len(f._candidates) == MAX_CANDIDATES
    f.claimed(10_000, 1, LIMIT, snap(xmin=10_000, horizon=10_001))  # the long transaction ended
    f.finished(None)
    assert f.floor == (3 * MAX_CANDIDATES - 1) * 10, "the newest candidate is kept, so the floor catches up"
