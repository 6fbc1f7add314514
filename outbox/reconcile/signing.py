"""Content hash, HMAC signature and verification of a report's JSON form.

The report is hashed in a canonical JSON form (sorted keys, no whitespace, UTF-8) without its ``integrity``
block. That block holds:

* ``content_sha256``: the hash of the whole report: any edit changes it;
* ``sections``: the hash of each top-level section and of each group, so ``outbox verify`` can say *which* part
  was edited;
* ``hmac_sha256`` (with ``--sign``): HMAC-SHA256 of the canonical form under the key in
  ``OUTBOX_REPORT_HMAC_KEY``; without the key nobody can recompute it after an edit, and ``key_id`` (a hash of
  the key) says which key signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

INTEGRITY = "integrity"


def canonical(obj: Any) -> bytes:
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != INTEGRITY}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def content_hash(report: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(report)).hexdigest()


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"outbox-report-key:" + key).hexdigest()[:16]


def sections(report: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in report.items():
        if k == INTEGRITY:
            continue
        if k == "groups" and isinstance(v, list):
            for i, g in enumerate(v):
                name = g.get("group", i) if isinstance(g, dict) else i
                out[f"groups[{name}]"] = hashlib.sha256(canonical(g)).hexdigest()
            out["groups"] = hashlib.sha256(canonical([g.get("group") if isinstance(g, dict) else g
                                                      for g in v])).hexdigest()
        else:
            out[k] = hashlib.sha256(canonical(v)).hexdigest()
    return out


def seal(report: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """``report`` with its integrity block (and an HMAC signature when ``key`` is given)."""
    body = canonical(report)
    integrity: dict[str, Any] = {"algorithm": "sha256", "content_sha256": hashlib.sha256(body).hexdigest(),
                                 "sections": sections(report), "hmac_sha256": None, "key_id": None}
    if key is not None:
        integrity["hmac_sha256"] = hmac.new(key, body, hashlib.sha256).hexdigest()
        integrity["key_id"] = key_id(key)
    return {**{k: v for k, v in report.items() if k != INTEGRITY}, INTEGRITY: integrity}


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` checked and found.

    ``checks`` says, one line per check, what was compared with what and the outcome (including the checks it
    could not make); ``reasons`` names each failure and what it means.
    """

    ok: bool
    signed: bool
    reasons: tuple[str, ...]
    missing_key: bool = False  # signed, content hash intact, but no key here to check the signature
    checks: tuple[str, ...] = ()


CONTENT_CHECK = "content hash (SHA-256 of the report without its integrity block, against the stored one)"
SIGNATURE_CHECK = "HMAC-SHA256 signature (of the content under OUTBOX_REPORT_HMAC_KEY, against the stored one)"


def _content_reason(report: dict[str, Any], integ: dict[str, Any], mac_ok: bool) -> str:
    """Why the content hash failed: the sections that differ, or what a mismatch with none differing means."""
    stored = integ.get("sections") or {}
    now = sections(report)
    changed = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
    if mac_ok:  # the signature covers the content, not the integrity block: the content is what was signed
        return ("content hash mismatch: the stored content hash does not match the content, but the HMAC "
                "signature does: the content is as signed, the integrity block's hashes were edited")
    if changed:
        return ("content hash mismatch: the report was changed after it was written; edited section(s): "
                + ", ".join(changed))
    return ("content hash mismatch: the report was changed after it was written, or its stored content hash was "
            "edited; every stored section hash still matches its section, so the section hashes were recomputed "
            "after the edit, or only the content hash was edited")


def verify(report: dict[str, Any], key: bytes | None) -> Verification:
    """Check the integrity block; every check is listed in ``checks`` and every failure named in ``reasons``."""
    integ = report.get(INTEGRITY)
    if not isinstance(integ, dict) or not isinstance(integ.get("content_sha256"), str):
        return Verification(False, False, ("the report has no integrity block: it was not written by "
                                           "`outbox reconcile`, or the block was removed",),
                            checks=("integrity block: absent, so no hash or signature could be checked",))
    reasons: list[str] = []
    body = canonical(report)
    content_ok = hashlib.sha256(body).hexdigest() == integ["content_sha256"]
    mac = integ.get("hmac_sha256")
    signed = isinstance(mac, str)
    mac_ok = False
    if signed and key is None:
        sig = "not checked: the report is signed, and no key is configured"
        reasons.append("the report is signed but no key is configured: set OUTBOX_REPORT_HMAC_KEY to verify it")
    elif signed and key is not None and integ.get("key_id") not in (None, key_id(key)):
        sig = "not checked: signed with another key"
        reasons.append(f"signed with another key (key id {integ.get('key_id')}, yours is {key_id(key)})")
    elif signed and key is not None:
        mac_ok = hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest(), str(mac))
        sig = "matches" if mac_ok else "MISMATCH"
        if not mac_ok and content_ok:
            reasons.append("signature mismatch: the content matches its stored hashes but not the signature: it "
                           "was changed after signing and its hashes recomputed, or the signature was edited")
        elif not mac_ok:
            reasons.append("signature mismatch: the content was changed after signing (its HMAC under your key "
                           "differs from the stored signature)")
    elif key is not None:
        sig = "absent, though a key is configured"
        reasons.append("the report is not signed, but a key is configured: a signature may have been stripped "
                       "(re-run `outbox reconcile --sign`)")
    else:
        sig = "not checked: the report is unsigned and no key is configured"
    if not content_ok:
        reasons.insert(0, _content_reason(report, integ, mac_ok))
    checks = (f"{CONTENT_CHECK}: {'matches' if content_ok else 'MISMATCH'}", f"{SIGNATURE_CHECK}: {sig}")
    missing_key = signed and key is None and len(reasons) == 1
    return Verification(not reasons, signed, tuple(reasons), missing_key, checks)
