"""Reconcile checkpoints: each proven id range per group, with its counts and digest, kept beside the outbox.

A checkpoint says "for this group, every expected event with an id in [id_lo, id_hi] was acknowledged once, in
order; here is the digest". Pruning (``outbox prune``) deletes only rows every subscribed group has
checkpointed, so the audit stays provable after the rows are gone: the report hash stored with each checkpoint
points back to the signed report that proved it.

The proven range stops before the first bucket that still has in-flight, pending or stuck events of the
group's topics, so a checkpoint never covers an event whose fate is still open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from outbox.reconcile.model import GroupReport, Report, Verdict
from outbox.store import audit as store

MASK = (1 << 64) - 1


def digest_text(algo: str, bits: int, n: int, x: int) -> str:
    return f"{algo}/{bits}:{n}:{x & MASK:016x}"


def proven_range(rep: GroupReport, expected: Mapping[int, tuple[int, int]], unsettled: Mapping[str, int], *,
                 lo: int, hi: int, bits: int, algo: str) -> dict[str, Any] | None:
    """The range this group's report proves, or None (not proven, or nothing settled yet)."""
    if rep.verdict is not Verdict.PROVEN or hi < lo:
        return None
    firsts = [unsettled[t] for t in rep.topics if t in unsettled]
    top = min(hi, (min(firsts) << bits) - 1) if firsts else hi
    if top < lo:
        return None
    n, x = 0, 0
    for b, (bn, bx) in expected.items():
        if b << bits <= top:
            n, x = n + bn, x ^ bx
    return {"id_lo": lo, "id_hi": top, "expected": n, "acknowledged": n, "digest": digest_text(algo, bits, n, x)}


def record(producer: sa.Engine, schema: str, report: Report, report_sha256: str) -> int:
    """Write the proven ranges of ``report``; returns how many were written."""
    cps = [store.Checkpoint(g.group, c["id_lo"], c["id_hi"], c["expected"], c["acknowledged"], c["digest"], g.topics)
           for g in report.groups if (c := g.checkpoint) is not None]
    if cps:
        with producer.begin() as conn:
            store.write_checkpoints(conn, schema, cps, report_sha256)
    return len(cps)
