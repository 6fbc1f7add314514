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
    """Literal values, fixed from 2026-12-01 on: writers and relays of any later version must agree on a key's
    shard (the hash changed once before the first release: docs/decisions/016)."""
    eid = uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057")
    assert [outbox.shard_for("orders", k, eid, 8) for k in (b"a", b"order-1", b"")] == [4, 6, 1]
    assert outbox.shard_for("orders", b"order-1", eid, 1024) == 502
    assert outbox.shard_for("payments", b"order-1", eid, 8) == 6  # the topic plays no part
    assert outbox.shard_for("orders", None, eid, 8) == 4


def test_shard_for_keyed_is_kafkas_partition_among_shards() -> None:
    """Kafka's own murmur2 test vectors (Java ``UtilsTest``, signed 32-bit), then the partition it implies."""
    from outbox.keyhash import murmur2

    vectors = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
               "a-little-bit-longer-string": -1486304829, "abc": 479470107,
               "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
    for text, signed in vectors.items():
        assert murmur2(text.encode()) == signed & 0xFFFFFFFF, text
        assert outbox.shard_for("t", text.encode(), uuid.uuid4(), 12) == (signed & 0x7FFFFFFF) % 12


def test_the_error_tree_is_pinned() -> None:
    """Callers catch these by name: adding one is deliberate, and its place in the tree (the module docstring)
    says what catching a parent covers."""
    from outbox import errors

    tree = {n: v.__mro__[1].__name__ for n, v in vars(errors).items()
            if isinstance(v, type) and issubclass(v, errors.OutboxError) and v is not errors.OutboxError}
    assert tree == {
        "EventValidationError": "OutboxError", "PayloadError": "EventValidationError",
        "SchemaValidationError": "EventValidationError", "TopicError": "EventValidationError",
        "KeyError_": "EventValidationError", "HeaderError": "EventValidationError",
        "AttributeValueError": "EventValidationError", "SessionStateError": "OutboxError",
        "ConfigError": "OutboxError", "TimeParseError": "ConfigError", "OutboxCollisionError": "ConfigError",
        "PoolingModeError": "ConfigError",
        "StoreError": "OutboxError", "DatabaseUnavailableError": "StoreError", "SchemaBehindError": "StoreError",
        "PermissionDeniedError": "StoreError", "UnstorableRecordError": "StoreError",
        "PublishError": "OutboxError", "KafkaUnavailableError": "PublishError", "FencedError": "PublishError",
        "PermanentPublishError": "PublishError", "LeaseLostError": "OutboxError", "ConsumerError": "OutboxError",
        "ReconcileError": "OutboxError", "ReportSignatureError": "OutboxError",
    }
    for name in tree:
        assert f" {name} " in errors.__doc__ or f" {name}\n" in (errors.__doc__ or ""), f"{name} not in the docstring"


def test_the_reconcile_surface_and_its_verdicts_are_pinned() -> None:
    """Automated audits branch on the verdict (and the CLI's exit code follows it: docs/auditors.md)."""
    import outbox.reconcile as r

    assert r.__all__ == ["ConsumerDatabase", "Finding", "GroupReport", "Journey", "Kind", "Options", "Progress",
                         "Replay", "Report", "Verdict", "Verification", "Window", "content_hash", "print_report",
                         "reconcile", "render_html", "seal", "trace", "verdict_line", "verify"]
    assert {v.name: v.value for v in r.Verdict} == {"PROVEN": "proven", "DISCREPANCIES": "discrepancies",
                                                      "INCONCLUSIVE": "inconclusive"}


def test_version_is_public() -> None:
    """``outbox.__version__`` (a dunder, so not in ``__all__``) is the installed distribution's version; pinned in
    tests/unit/test_packaging.py."""
    assert isinstance(outbox.__version__, str) and outbox.__version__[0].isdigit()
    assert "__version__" not in outbox.__all__
