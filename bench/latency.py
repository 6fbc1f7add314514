"""(d) of ``bench.relay``: commit → read_committed consumer latency at an offered rate, and its plot."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import outbox
from bench.records import KEYS, PARTITIONS, create_topic, payload


def latency(url: str, bootstrap: str, rate: int, seconds: float) -> dict[str, Any]:
    from confluent_kafka import Consumer, TopicPartition

    topic = f"bench-latency-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic)
    committed: dict[bytes, float] = {}
    received: dict[bytes, float] = {}
    stop = threading.Event()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4().hex[:6]}",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    # Assign (no group join) and start fetching before the first write: a subscribe() would still be joining
    # its group while the first events arrive and charge that second to the relay.
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    c.consume(1, timeout=1.0)

    def consume() -> None:
        # poll() returns as soon as one record is there; consume(n, timeout) would wait until n records or the
        # timeout and charge that batching wait (half the timeout on average) to every event's latency.
        while not stop.is_set():
            first = c.poll(0.05)
            if first is None:
                continue
            now = time.time()
            for m in (first, *c.consume(1000, timeout=0)):  # whatever else is already fetched, without waiting
                if m.error() is None:
                    for h in m.headers() or []:
                        if h[0] == "outbox-event-id" and isinstance(h[1], bytes):
                            received[h[1]] = now

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    eng = sa.create_engine(url, pool_size=2)
    per_txn = max(1, rate // 100)
    period = per_txn / rate
    i = 0
    t_start = time.monotonic()
    nxt = t_start
    while time.monotonic() - t_start < seconds:
        with eng.begin() as conn:
            stored = outbox.enqueue(conn, *[outbox.Event(topic=topic, type="bench.lat", key=f"k{(i + j) % KEYS}",
                                                         data=payload(i + j), content_type="application/octet-stream")
                                            for j in range(per_txn)])
        now = time.time()
        for s in stored:
            committed[str(s.event_id).encode()] = now
        i += per_txn
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
    achieved = i / (time.monotonic() - t_start)
    deadline = time.monotonic() + 60
    while len(received) < len(committed) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    th.join(10)
    c.close()
    eng.dispose()
    lat = sorted((received[k] - t) * 1000 for k, t in committed.items() if k in received)
    series = sorted((t - min(committed.values()), (received[k] - t) * 1000) for k, t in committed.items()
                    if k in received)

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else float("nan")

    return {"offered_rate": rate, "achieved_rate": round(achieved, 1), "events": len(committed),
            "received": len(lat), "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
                                                  "max": round(lat[-1], 2) if lat else None}, "_series": series}


def plot(series: list[tuple[float, float]], lat: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = [s[0] for s in series]
    ys = [s[1] for s in series]
    ax1.scatter(xs, ys, s=1, alpha=0.4)
    ax1.set(xlabel="seconds into the run", ylabel="commit → read_committed consumer (ms)",
            title=f"latency over time at {lat['offered_rate']} events/s offered", yscale="log")
    srt = sorted(ys)
    ax2.plot(srt, [i / len(srt) for i in range(len(srt))])
    for q in ("p50", "p90", "p99"):
        ax2.axvline(lat["latency_ms"][q], linestyle="--", linewidth=0.8)
        ax2.text(lat["latency_ms"][q], 0.02, f" {q} {lat['latency_ms'][q]:.0f}ms", rotation=90, fontsize=8)
    ax2.set(xlabel="latency (ms)", ylabel="fraction of events", title="CDF", xscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def point(d: dict[str, Any]) -> dict[str, Any]:
    return {**d["latency_ms"], "offered_rate": d["offered_rate"], "events": d["events"], "received": d["received"]}
