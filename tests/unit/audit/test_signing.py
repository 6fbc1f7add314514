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


def test_a_plain_edit_never_claims_that_hashes_were_recomputed() -> None:
    d = seal(report(), KEY)
    d["events"] = 4
    v = verify(d, KEY)
    assert not v.ok and not any("recomputed" in r for r in v.reasons), v.reasons
    assert v.reasons[1] == ("signature mismatch: the content was changed after signing (its HMAC under your key "
                            "differs from the stored signature)")
    assert [c.rsplit(": ", 1)[1] for c in v.checks] == ["MISMATCH", "MISMATCH"]


def test_rehashed_content_is_named_as_rehashed_only_when_it_was() -> None:
    d = seal(report(), KEY)
    d["events"] = 4
    rehashed = seal(d)  # every hash recomputed; the signature cannot be
    rehashed["integrity"].update(hmac_sha256=d["integrity"]["hmac_sha256"], key_id=d["integrity"]["key_id"])
    v = verify(rehashed, KEY)
    assert v.reasons == ("signature mismatch: the content matches its stored hashes but not the signature: it was "
                         "changed after signing and its hashes recomputed, or the signature was edited",)
    assert [c.rsplit(": ", 1)[1] for c in v.checks] == ["matches", "MISMATCH"]


def test_an_edited_stored_hash_over_signed_content_says_the_content_is_as_signed() -> None:
    d = seal(report(), KEY)
    d["integrity"]["content_sha256"] = "0" * 64
    v = verify(d, KEY)
    assert not v.ok and v.reasons == (
        "content hash mismatch: the stored content hash does not match the content, but the HMAC signature does: "
        "the content is as signed, the integrity block's hashes were edited",)


def test_checks_say_what_could_not_be_checked() -> None:
    assert verify(seal(report()), None).checks[1].endswith("not checked: the report is unsigned and no key is "
                                                           "configured")
    assert verify(seal(report(), b"another-key-123456"), KEY).checks[1].endswith("not checked: signed with another "
                                                                                 "key")
    assert verify(seal(report()), KEY).checks[1].endswith("absent, though a key is configured")
    assert verify(report(), KEY).checks == ("integrity block: absent, so no hash or signature could be checked",)
