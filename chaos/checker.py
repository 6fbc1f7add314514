"""The independent check: what Kafka's own ConsoleConsumer (read_committed) saw against the outbox table.

Nothing here imports the project's store, relay or reconciler: the outbox table is read with plain SQL and Kafka
is read by Apache Kafka's Java ConsoleConsumer, so a bug in our code cannot hide itself.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg

from stack.kafka import kafka_tool

_LINE = re.compile(r"^Partition:(\d+)\tOffset:(\d+)\t(.*)$")
_EID = re.compile(r"outbox-event-id:([0-9a-f-]{36})")
_SEQ = re.compile(r"outbox-key-seq:(\d+)")


@dataclass(frozen=True)
class Seen:
    topic: str
    partition: int
    offset: int
    event_id: str
    key_seq: int | None


@dataclass
class Verdict:
    events: int = 0
    seen: int = 0
    lost: int = 0
    duplicates: int = 0
    order_violations: int = 0
    phantoms: int = 0
    rereads: int = 0
    """Records the reader was handed twice at the same offset (a consumer-side re-fetch): not in the log twice."""
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicates == self.order_violations == self.phantoms == 0

    def as_dict(self) -> dict[str, object]:
        return {"events": self.events, "seen": self.seen, "lost": self.lost, "duplicates": self.duplicates,
                "order_violations": self.order_violations, "phantoms": self.phantoms,
                "rereads": self.rereads, "examples": {k: v[:10] for k, v in self.examples.items()}}


def read_topic(bootstrap: str, topic: str, expected: int, timeout_ms: int = 10000) -> list[Seen]:
    """Every record of ``topic`` as Kafka's ConsoleConsumer sees it under read_committed, from the beginning."""
    res = kafka_tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap, "--topic", topic,
        "--from-beginning", "--isolation-level", "read_committed", "--timeout-ms", str(timeout_ms),
        "--max-messages", str(max(expected, 1) * 2 + 1000),
        "--formatter-property", "print.partition=true", "--formatter-property", "print.offset=true",
        "--formatter-property", "print.headers=true", "--formatter-property", "print.key=false",
        "--formatter-property", "print.value=false",
        timeout=timeout_ms / 1000 + 600, heap="1g",
    )
    out: list[Seen] = []
    for line in res.stdout.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        eid = _EID.search(m.group(3))
        if eid is None:
            continue
        seq = _SEQ.search(m.group(3))
        out.append(Seen(topic, int(m.group(1)), int(m.group(2)), eid.group(1), int(seq.group(1)) if seq else None))
    return out


def check(dsn: str, bootstrap: str, topics: list[str], schema: str = "outbox") -> Verdict:
    """Compare the committed, not dead-lettered outbox rows of ``topics`` with what Kafka holds."""
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            f"SELECT event_id::text, topic, key, key_seq FROM {schema}.event "
            "WHERE topic = ANY(%s) AND dead_at IS NULL", (topics,)
        ).fetchall()
    expected = {r[0]: (r[1], r[2], r[3]) for r in rows}
    seen: list[Seen] = []
    for t in topics:
        seen.extend(read_topic(bootstrap, t, expected=sum(1 for v in expected.values() if v[0] == t)))
    return judge(expected, seen)


def judge(expected: Mapping[str, tuple[str, bytes | None, int | None]], seen: list[Seen]) -> Verdict:
    """The verdict on what was read (``seen``) against the rows (event id → topic, key, key_seq)."""
    # One offset is one record: a reader handed the same offset twice (the ConsoleConsumer re-fetching after its
    # group rejoined) did not find a duplicate in the log. A duplicate is one event id at two offsets.
    at: dict[tuple[str, int, int], Seen] = {}
    for s in seen:
        at.setdefault((s.topic, s.partition, s.offset), s)
    v = Verdict(events=len(expected), seen=len(at), rereads=len(seen) - len(at))
    seen = list(at.values())
    counts = Counter(s.event_id for s in seen)
    dups = {e: n for e, n in counts.items() if n > 1}
    v.duplicates = sum(n - 1 for n in dups.values())
    places = defaultdict(list)
    for s in seen:
        if s.event_id in dups:
            places[s.event_id].append(f"{s.topic}[{s.partition}]@{s.offset}")
    v.examples["duplicates"] = [f"{e} at {', '.join(places[e])}" for e in sorted(dups)]
    lost = sorted(set(expected) - set(counts))
    v.lost = len(lost)
    v.examples["lost"] = lost
    phantoms = sorted(set(counts) - set(expected))
    v.phantoms = len(phantoms)
    v.examples["phantoms"] = phantoms
    # Per key, in partition/offset order, the per-key sequence must strictly increase.
    last: dict[tuple[str, bytes], int] = {}
    bad: list[str] = []
    firsts: dict[str, Seen] = {}
    for s in seen:
        firsts.setdefault(s.event_id, s)
    by_part: dict[tuple[str, int], list[Seen]] = defaultdict(list)
    for s in firsts.values():
        by_part[(s.topic, s.partition)].append(s)
    for recs in by_part.values():
        for s in sorted(recs, key=lambda r: r.offset):
            exp = expected.get(s.event_id)
            if exp is None or exp[1] is None or s.key_seq is None:
                continue
            k = (exp[0], bytes(exp[1]))
            if k in last and s.key_seq <= last[k]:
                bad.append(f"{s.event_id} seq {s.key_seq} after {last[k]}")
            last[k] = max(last.get(k, 0), s.key_seq)
    v.order_violations = len(bad)
    v.examples["order_violations"] = bad
    return v
