"""The chaos suite's independent verdict, on hand-made reads: what counts as lost, duplicated or out of order."""

from __future__ import annotations

from chaos.checker import Seen, judge

ROWS = {f"00000000-0000-0000-0000-00000000000{i}": ("t", b"k", i) for i in range(1, 5)}


def _seen(*items: tuple[int, int]) -> list[Seen]:
    """(offset, row number) pairs, all on partition 0."""
    return [Seen("t", 0, off, f"00000000-0000-0000-0000-00000000000{n}", n) for off, n in items]


def test_each_row_once_in_order_is_clean() -> None:
    v = judge(ROWS, _seen((0, 1), (1, 2), (2, 3), (3, 4)))
    assert v.clean and v.seen == 4 and v.rereads == 0


def test_the_same_event_at_two_offsets_is_a_duplicate() -> None:
    v = judge(ROWS, _seen((0, 1), (1, 2), (2, 3), (3, 4), (4, 3)))
    assert v.duplicates == 1 and not v.clean
    assert v.examples["duplicates"] == ["00000000-0000-0000-0000-000000000003 at t[0]@2, t[0]@4"]


def test_the_reader_handed_one_offset_twice_is_a_reread_not_a_duplicate() -> None:
    v = judge(ROWS, _seen((0, 1), (1, 2), (2, 3), (1, 2), (2, 3), (3, 4)))
    assert v.clean and v.rereads == 2 and v.seen == 4


def test_missing_and_reordered_and_unknown_events_are_named() -> None:
    v = judge(ROWS, [*_seen((0, 2), (1, 1), (2, 4)), Seen("t", 0, 3, "ffffffff-0000-0000-0000-000000000000", None)])
    assert v.lost == 1 and v.examples["lost"] == ["00000000-0000-0000-0000-000000000003"]
    assert v.order_violations == 1 and v.phantoms == 1
