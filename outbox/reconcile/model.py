"""The reconciler's values: findings, per-group results and the report, plus their JSON form.

The JSON form (:meth:`Report.to_dict`) is the canonical report: it is what is hashed and signed, and the
terminal and HTML renderers read it, so every output says exactly what the signed JSON says.

Format v2 added audited replays: a ``replayed`` count per group and in the totals, findings of kind
``replayed`` naming their ``replay_audits``, and the ``replays`` section. A v1 report counted a copy received
because of a replay as ``duplicated``. Format v3 (this one) adds the verdict ``inconclusive`` (report and group):
a v2 report said ``proven`` for a window that compared nothing while its events were still in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

REPORT_FORMAT = "kafka-outbox/reconcile-report/v3"


class Verdict(Enum):
    """``proven``: every expected event acknowledged once, in order, nothing stuck (exit 0); the verdict line
    still says how many events were compared and how many in flight were left out.
    ``discrepancies``: at least one named finding below (exit 1).
    ``inconclusive``: no discrepancy, but a group compared nothing while events of its topics are in flight
    (published within the grace, or not yet published): nothing is proven for it yet; reconcile again once they
    settle (exit 4)."""

    PROVEN = "proven"
    DISCREPANCIES = "discrepancies"
    INCONCLUSIVE = "inconclusive"


class Kind(Enum):
    """What a finding says about one event (docs/auditors.md defines each precisely)."""

    MISSING = "missing"            # published before the grace cutoff, never acknowledged by the group
    DUPLICATED = "duplicated"      # the group received it from two Kafka positions: it was published twice
    OUT_OF_ORDER = "out_of_order"  # acknowledged after a higher key_seq of the same key
    STUCK = "stuck"                # still unpublished after the stuck SLO
    UNEXPECTED = "unexpected"      # an acknowledgement that matches no expected event
    DEAD_LETTERED = "dead_lettered"  # parked with its reason (relay DLQ or consumer handler): recorded, not lost
    REPLAYED = "replayed"          # received from a second position that an operator's audited replay explains


DISCREPANCIES = (Kind.MISSING, Kind.DUPLICATED, Kind.OUT_OF_ORDER, Kind.STUCK, Kind.UNEXPECTED)


def key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        text = bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + bytes(key).hex()
    return text if text.isprintable() else "0x" + bytes(key).hex()


@dataclass(frozen=True)
class Finding:
    kind: Kind
    outbox_id: int | None
    event_id: str | None
    topic: str | None
    key: str | None
    key_seq: int | None
    detail: str
    replay_audits: tuple[int, ...] = ()  # the replay_audit ids covering the event (replayed findings)

    @classmethod
    def of(cls, kind: Kind, row: Any, detail: str, id_attr: str = "outbox_id",
           replay_audits: tuple[int, ...] = ()) -> Finding:
        oid = getattr(row, id_attr, None)
        return cls(kind=kind, outbox_id=None if oid is None else int(oid),
                   event_id=None if row.event_id is None else str(row.event_id), topic=row.topic,
                   key=key_text(row.key), key_seq=row.key_seq, detail=detail, replay_audits=replay_audits)

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind.value, "outbox_id": self.outbox_id, "event_id": self.event_id,
             "topic": self.topic, "key": self.key, "key_seq": self.key_seq, "detail": self.detail}
        return d | {"replay_audits": list(self.replay_audits)} if self.replay_audits else d


def replays_text(audit_ids: tuple[int, ...]) -> str:
    """``replay #7`` or ``replays #7, #9``: the replay_audit ids, as findings name them."""
    return ("replay " if len(audit_ids) == 1 else "replays ") + ", ".join(f"#{a}" for a in audit_ids)


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


@dataclass(frozen=True)
class Window:
    id_lo: int | None
    id_hi: int | None
    since: datetime | None
    until: datetime | None
    grace_s: float
    stuck_after_s: float
    now: datetime
    cutoff: datetime
    stuck_before: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id_lo": self.id_lo, "id_hi": self.id_hi, "since": iso(self.since), "until": iso(self.until),
                "grace_s": self.grace_s, "stuck_after_s": self.stuck_after_s, "database_now": iso(self.now),
                "cutoff": iso(self.cutoff), "stuck_before": iso(self.stuck_before)}


REPLAY_RUNS_LISTED = 20


@dataclass(frozen=True)
class Replay:
    """An operator's replay (a ``replay_audit`` row) that re-queued ids inside the window."""

    audit_id: int
    actor: str
    created_at: datetime
    event_count: int  # rows the replay re-queued in all (inside and outside the window)
    runs: tuple[tuple[int, int], ...]  # its replayed id runs inside the window, ascending

    def to_dict(self) -> dict[str, Any]:
        return {"audit_id": self.audit_id, "actor": self.actor, "created_at": iso(self.created_at),
                "event_count": self.event_count, "ids_in_window": sum(b - a + 1 for a, b in self.runs),
                "id_runs_total": len(self.runs), "id_runs": [[a, b] for a, b in self.runs[:REPLAY_RUNS_LISTED]]}


@dataclass(frozen=True)
class GroupReport:
    group: str
    database: str
    topics: tuple[str, ...]
    expected: int
    acknowledged: int
    missing: int
    duplicated: int
    out_of_order: int
    stuck: int
    dead_lettered: int
    unexpected: int
    in_flight: int
    findings: tuple[Finding, ...]
    latency_ms: tuple[tuple[int, int], ...]  # (log2 bin k: [2^k, 2^(k+1)) ms, count)
    checkpoint: dict[str, Any] | None = None
    replayed: int = 0  # received again from a position an audited replay explains: not a discrepancy

    @property
    def verdict(self) -> Verdict:
        bad = self.missing + self.duplicated + self.out_of_order + self.stuck + self.unexpected
        if bad:
            return Verdict.DISCREPANCIES
        # "0 missing of 0 expected" proves nothing while events wait in the grace: a proof must compare something
        return Verdict.INCONCLUSIVE if self.expected == 0 and self.in_flight else Verdict.PROVEN

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "database": self.database, "topics": list(self.topics),
            "verdict": self.verdict.value, "expected": self.expected, "acknowledged": self.acknowledged,
            "missing": self.missing, "duplicated": self.duplicated, "replayed": self.replayed,
            "out_of_order": self.out_of_order, "stuck": self.stuck, "dead_lettered": self.dead_lettered,
            "unexpected": self.unexpected, "in_flight": self.in_flight,
            "findings": [f.to_dict() for f in self.findings],
            "delivery_latency_ms": [[k, n] for k, n in self.latency_ms], "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    producer_database: str
    window: Window
    algorithm: str
    bucket_bits: int
    events: int
    groups: tuple[GroupReport, ...]
    stuck: int
    relay_dead_lettered: int
    in_flight: int
    outbox_findings: tuple[Finding, ...]  # stuck and relay dead letters (not per group)
    backlog: tuple[tuple[str, int, int], ...]  # (bin end time, created so far, published so far)
    publish_latency_ms: tuple[tuple[int, int], ...]
    elapsed_s: float
    chart_step: int = 1  # charts use every chart_step-th id of the window (counts scaled back)
    notes: tuple[str, ...] = field(default=())
    replays: tuple[Replay, ...] = field(default=())

    @property
    def verdict(self) -> Verdict:
        verdicts = {g.verdict for g in self.groups}
        if Verdict.DISCREPANCIES in verdicts or self.stuck:
            return Verdict.DISCREPANCIES
        return Verdict.INCONCLUSIVE if Verdict.INCONCLUSIVE in verdicts else Verdict.PROVEN

    def to_dict(self) -> dict[str, Any]:
        d = {
            "format": REPORT_FORMAT, "generated_at": self.generated_at.isoformat(),
            "producer_database": self.producer_database, "window": self.window.to_dict(),
            "digest": {"algorithm": self.algorithm, "bucket_bits": self.bucket_bits},
            "verdict": self.verdict.value, "events": self.events,
            "totals": {k: sum(getattr(g, k) for g in self.groups) for k in
                       ("expected", "acknowledged", "missing", "duplicated", "replayed", "out_of_order",
                        "unexpected", "dead_lettered")}
            | {"stuck": self.stuck, "relay_dead_lettered": self.relay_dead_lettered, "in_flight": self.in_flight},
            "groups": [g.to_dict() for g in self.groups],
            "outbox_findings": [f.to_dict() for f in self.outbox_findings],
            "replays": [r.to_dict() for r in self.replays],
            "charts": {"sample_step": self.chart_step, "backlog": [list(b) for b in self.backlog],
                       "publish_latency_ms": [[k, n] for k, n in self.publish_latency_ms]},
            "elapsed_s": round(self.elapsed_s, 3), "notes": list(self.notes),
        }
        d["verdict_line"] = verdict_line(d)
        return d


def verdict_line(d: dict[str, Any]) -> str:
    """The one-line verdict, e.g. ``verdict: zero loss proven — 10,000 events, 2 consumer groups, ...``.

    A proof says what it covered: the events compared, and the events in flight it left out (they are named
    only when there are some, so a settled window reads as before)."""
    t, n = d["totals"], len(d["groups"])
    groups = f"{n} consumer group{'s' if n != 1 else ''}"
    head = f"{d['events']:,} events, {groups}, {t['missing']} missing, {t['duplicated']} duplicated, " \
           f"{t['out_of_order']} out of order"
    replayed = f", {t['replayed']:,} replayed (audited)" if t.get("replayed") else ""
    in_flight = t.get("in_flight", 0)  # .get: a hand-built or older report may lack them
    grace = d.get("window", {}).get("grace_s", 0)
    left_out = f"{in_flight:,} in flight (published within the {grace:g}s grace or not yet published)"
    if d["verdict"] == Verdict.PROVEN.value:
        tail = f", {t['dead_lettered'] + t['relay_dead_lettered']} dead-lettered (recorded)" \
            if t["dead_lettered"] + t["relay_dead_lettered"] else ""
        out = f"; {left_out}, not compared" if in_flight else ""
        return f"verdict: zero loss proven — {head}{replayed}{tail}{out}"
    if d["verdict"] == Verdict.INCONCLUSIVE.value:
        empty = [g["group"] for g in d["groups"] if g["verdict"] == Verdict.INCONCLUSIVE.value]
        which = "" if len(empty) == n else f" for group{'s' if len(empty) != 1 else ''} " \
            + ", ".join(repr(g) for g in empty)
        # never the word "proven": a script that greps for it must not take this for proof
        return (f"verdict: INCONCLUSIVE — no proof yet{which}: {d['events']:,} events compared, {left_out}; "
                "reconcile again once they have settled")
    return f"verdict: DISCREPANCIES — {head}, {t['stuck']} stuck, {t['unexpected']} unexpected{replayed}"


def stuck_detail(r: Any, now: datetime) -> str:
    """The detail of a stuck finding: how long unpublished, how many attempts, the last error."""
    age = (now - r.created_at).total_seconds()
    err = f"; last error: {r.last_error}" if r.last_error else ""
    return f"unpublished for {age:,.0f}s after {r.attempts} attempt(s){err}"
