"""When a run is not clean, say what happened to the events in question, in the run's own output.

CI keeps only what a failing test prints. The 2026-12-01 duplicate took an afternoon to trace from a kept run
directory (the rows, the relay logs of their shard, the checkpoint partition); this prints the first two of
those for up to five named events, so the next failure can be read from the CI log alone.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

# Relay log messages that tell a shard's story (ownership, recovery, errors); librdkafka chatter is left out.
_STORY = ("shard acquired", "shard lost", "shard released", "recovered the last committed batch", "recovery:",
          "transient failure", "unexpected error", "fenced", "relay started", "relay stopped")


def report(dsn: str, home: Path, examples: dict[str, list[str]], limit: int = 5) -> list[str]:
    """Lines describing up to ``limit`` duplicated or lost events: their rows and their shard's relay log."""
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
    for shard, (lo, hi) in sorted(shards.items()):
        lines.append(f"relay log, shard {shard}, {lo:%H:%M:%S} - {hi:%H:%M:%S} (+-10 s):")
        lines += _story(home, shard, lo - timedelta(seconds=10), hi + timedelta(seconds=10))
    return lines


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
