"""The public surface is explicit and pinned: changing it is a deliberate act."""

from __future__ import annotations

import uuid

import outbox

EXPECTED = [
    "AutoEvents",
    "Event",
    "JsonSchemaRegistry",
    "OutboxMixin",
    "Settings",
    "StoredEvent",
    "configure",
    "enqueue",
    "errors",
    "install",
    "settings",
    "shard_for",
    "testing",
]


def test_all_is_pinned() -> None:
    assert outbox.__all__ == EXPECTED


def test_every_name_exists() -> None:
    for name in outbox.__all__:
        assert getattr(outbox, name) is not None, name


def test_shard_for_is_stable() -> None:
    """Literal values, fixed forever: writers and relays of any version must agree on a key's shard."""
    eid = uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057")
    assert [outbox.shard_for("orders", k, eid, 8) for k in (b"a", b"order-1", b"")] == [5, 6, 7]
    assert outbox.shard_for("orders", b"order-1", eid, 1024) == 254
    assert outbox.shard_for("orders", None, eid, 8) == 4
