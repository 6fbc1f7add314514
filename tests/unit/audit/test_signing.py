"""Sealing and verifying reports: any edit is caught and the reason names it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from outbox.errors import ConfigError
from outbox.reconcile.config import hmac_key
from outbox.reconcile.signing import content_hash, seal, verify

KEY = b"a-sixteen-char-key!"


def report() -> dict[str, Any]:
    return {"format": "kafka-outbox/reconcile-report/v1", "verdict": "proven", "events": 3,
            "groups": [{"group": "billing", "missing": 0}, {"group": "shipping", "missing": 0}],
            "verdict_line": "verdict: zero loss proven — 3 events"}


def test_sealed_reports_verify_with_and_without_signature() -> None:
    assert verify(seal(report()), None).ok
    v = verify(seal(report(), KEY), KEY)
    assert v.ok and v.signed
    assert content_hash(seal(report(), KEY)) == content_hash(report()), "the hash ignores the integrity block"


@pytest.mark.parametrize(("edit", "section"), [
    (lambda d: d["groups"][1].update(missing=1), "groups[shipping]"),
    (lambda d: d.update(events=4), "events"),
    (lambda d: d["groups"].pop(), "groups"),
    (lambda d: d.update(extra=True), "extra"),
])
def test_every_edit_is_named(edit: Any, section: str) -> None:
    d = seal(report(), KEY)
    edit(d)
    v = verify(d, KEY)
    assert not v.ok and section in v.reasons[0]
    assert any("signature mismatch" in r for r in v.reasons)


def test_rehashing_after_an_edit_is_caught_only_by_the_signature() -> None:
    d = seal(report(), KEY)
    d["events"] = 2
    forged = seal(d)  # recomputes every hash, cannot recompute the HMAC
    assert verify(forged, None).ok, "without a key, an unsigned rehash is indistinguishable"
    v = verify(forged, KEY)
    assert not v.ok and "not signed, but a key is configured" in v.reasons[0]
    d2 = copy.deepcopy(forged)
    d2["integrity"]["hmac_sha256"] = "00" * 32
    assert not verify(d2, KEY).ok


def test_other_key_missing_key_and_missing_block() -> None:
    assert "another key" in verify(seal(report(), b"another-key-123456"), KEY).reasons[0]
    v = verify(seal(report(), KEY), None)
    assert not v.ok and v.missing_key
    assert "no integrity block" in verify(report(), KEY).reasons[0]


def test_hmac_key_from_environment() -> None:
    assert hmac_key({}) is None
    assert hmac_key({"OUTBOX_REPORT_HMAC_KEY": "x" * 16}) == b"x" * 16
    with pytest.raises(ConfigError, match="OUTBOX_REPORT_HMAC_KEY must be at least 16"):
        hmac_key({"OUTBOX_REPORT_HMAC_KEY": "short"})
