"""When a run is not clean, say what happened to the events in question, in the run's own output.

CI keeps only what a failing test prints. The 2026-12-01 duplicate took an afternoon to trace from a kept run
directory (the rows, the relay logs of their shard, the checkpoint partition); this prints the first two of
those for up to five named events, so the next failure can be read from the CI log alone.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition

# Relay log messages that tell a shard's story (ownership, recovery, errors); librdkafka chatter is left out.
_STORY = ("shard acquired", "shard lost", "shard released", "recovered the last committed batch", "recovery:",
          "transient failure", "unexpected error", "fenced", "relay started", "relay stopped")


def report(dsn: str, home: Path, examples: dict[str, list[str]], limit: int = 5, *,
           bootstrap: str | None = None, checkpoint_topic: str | None = None) -> list[str]:
    """Lines describing up to ``limit`` duplicated or lost events: their rows, every checkpoint record naming
    them (committed or aborted) when ``bootstrap`` is given, and their shard's relay log."""
    ids = [line.split(" at ")[0] for line in examples.get("duplicates", [])[:limit]]
    ids += examples.get("lost", [])[:limit]
    if not ids:
        return []
    lines: list[str] = []
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT event_id::text, id, shard, topic, kafka_partition, kafka_offset, relay_epoch, published_at, "
            "created_at FROM outbox.event WHERE event_id::text = ANY(%s) ORDER BY id", (ids,)).fetchall()
    shards: dict[int, tuple[datetime, datetime]] = {}
    for eid, rid, shard, topic, part, off, epoch, pub, created in rows:
        where = next((d for d in examples.get("duplicates", []) if d.startswith(eid)), f"{eid} (lost)")
        lines.append(f"row {rid} shard {shard} {topic}: marked at [{part}]@{off} by epoch {epoch} at {pub}, "
                     f"written {created}; Kafka: {where}")
        lo, hi = shards.get(shard, (created, pub or created))
        shards[shard] = (min(lo, created), max(hi, pub or created))
    if bootstrap and checkpoint_topic and rows:
        lines += checkpoint_trail(bootstrap, checkpoint_topic, {int(r[1]) for r in rows})
    for shard, (lo, hi) in sorted(shards.items()):
        lines.append(f"relay log, shard {shard}, {lo:%H:%M:%S} - {hi:%H:%M:%S} (+-10 s):")
        lines += _story(home, shard, lo - timedelta(seconds=10), hi + timedelta(seconds=10))
    return lines


def checkpoint_trail(bootstrap: str, topic: str, row_ids: set[int], limit: int = 40) -> list[str]:
    """Every checkpoint record that names one of ``row_ids``: where it sits, whether it committed, which
    epoch/owner wrote it and where it says the row went. A duplicate whose first copy no committed checkpoint
    names was never recoverable; one that a committed checkpoint names was missed by recovery."""
    committed = {(p, o) for p, o, _ in _read_all(bootstrap, topic, "read_committed")}
    out: list[str] = []
    for p, o, value in _read_all(bootstrap, topic, "read_uncommitted"):
        try:
            doc = json.loads(value)
            rows = doc["rows"]
        except (ValueError, KeyError, TypeError):
            continue  # an opening record or a probe
        named = [r for r in rows if r[0] in row_ids]
        if named:
            state = "committed" if (p, o) in committed else "NOT committed"
            out.append(f"checkpoint {topic}[{p}]@{o} {state}: shard {doc.get('shard')} epoch {doc.get('epoch')} "
                       f"owner {doc.get('owner')} ({len(rows)} rows, ids {rows[0][0]}..{rows[-1][0]}) names "
                       + ", ".join(f"row {i} at [{rp}]@{ro}" for i, rp, ro in named[:6]))
    return out[:limit] or [f"no checkpoint record in {topic} names rows {sorted(row_ids)[:10]}"]


def _read_all(bootstrap: str, topic: str, isolation: str) -> list[tuple[int, int, bytes]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-forensics", "enable.auto.commit": False,
                  "isolation.level": isolation, "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=30).topics.get(topic)
        parts = sorted(md.partitions) if md is not None else []
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        eof: set[int] = set()
        out: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + 120
        while len(eof) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                err, part, off = m.error(), int(m.partition() or 0), int(m.offset() or 0)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(part)
                    continue
                out.append((part, off, m.value() or b""))
        return out
    finally:
        c.close()


def _story(home: Path, shard: int, lo: datetime, hi: datetime) -> list[str]:
    out: list[tuple[str, str]] = []
    for log in sorted(home.glob("relay*.log")):
        for raw in log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            msg = str(rec.get("msg", ""))
            if not any(s in msg for s in _STORY) or rec.get("shard", shard) != shard:
                continue
            ts = datetime.fromisoformat(str(rec.get("ts", "")).replace("Z", "+00:00"))
            if lo <= ts <= hi:
                extra = {k: v for k, v in rec.items() if k not in ("ts", "level", "logger", "msg", "settings")}
                out.append((rec["ts"], f"  {rec['ts'][11:23]} {log.stem}: {msg} {json.dumps(extra)[:240]}"))
    return [line for _, line in sorted(out)][:60]
