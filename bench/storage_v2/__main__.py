"""``python -m bench.storage_v2``: the relay storage prototypes side by side (docs/decisions/035).

Designs (each in its own schema of one Postgres 18 cluster, written by the real ``outbox.enqueue``):

- ``today``: the product's claim + mark-by-UPDATE, with its own SQL (``outbox.store.relay``);
- ``snapshot``: (a) PgQ-style snapshot batches over ``xid8`` (``bench/storage_v2/snapshot.py``);
- ``logical``: (b) logical decoding through SQL functions, pgoutput binary (``logical.py``);
  ``logical-8slots``: the same with one slot per shard (row-filtered publications);
- ``horizon``: (c) an id cursor behind a proven xmin horizon (``horizon.py``).

The Kafka side is a no-op (``sink.py``): these are storage measurements. Drains are repeated ``--reps`` times
with the designs' order rotated, and reported as medians and as ratios to ``today`` within each repetition (the
machine is shared: read the ratios). Writes ``bench/results/storage_v2.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.storage_v2 import cluster, scenarios
from bench.storage_v2.design import Design
from bench.storage_v2.horizon import Horizon
from bench.storage_v2.logical import Logical
from bench.storage_v2.sink import Sink
from bench.storage_v2.snapshot import Snapshot
from bench.storage_v2.today import Today

RESULTS = Path(__file__).resolve().parent.parent / "results"
DESIGNS = ("today", "snapshot", "logical", "horizon")


def make(name: str, dsn: str, url: str, shards: int, batch: int) -> Design:
    sink = Sink(partitions=shards)
    kw: dict[str, Any] = {"shards": shards, "batch": batch, "sink": sink}
    if name == "today":
        return Today(dsn, url, **kw)
    if name == "snapshot":
        return Snapshot(dsn, url, **kw)
    if name == "horizon":
        return Horizon(dsn, url, **kw)
    if name == "logical":
        return Logical(dsn, url, **kw)
    if name.startswith("logical-") and name.endswith("slots"):
        return Logical(dsn, url, slots=int(name[len("logical-"):-len("slots")]), **kw)
    raise SystemExit(f"unknown design {name!r}: {', '.join(DESIGNS)}, logical-<n>slots")


# The figures compared across designs, by path in a drain result.
KEY_FIGURES = {
    "relay_pg_cpu_us_per_event": ("relay_pg_cpu_us_per_event",),
    "drain_pg_cpu_us_per_event": ("drain", "pg_cpu_us_per_event", "total"),
    "vacuum_pg_cpu_us_per_event": ("vacuum", "pg_cpu_us_per_event", "total"),
    "write_pg_cpu_us_per_event": ("write", "pg_cpu_us_per_event", "total"),
    "wal_bytes_per_event": ("wal_bytes_per_event",),
    "write_wal_bytes_per_event": ("write", "wal_bytes_per_event"),
    "drain_wal_bytes_per_event": ("drain", "wal_bytes_per_event"),
    "vacuum_wal_bytes_per_event": ("vacuum", "wal_bytes_per_event"),
    "buffers_per_claim": ("drain", "statements", "buffers_per_claim"),
    "buffers_per_event": ("drain", "statements", "buffers_per_event"),
    "drain_events_per_s": ("drain", "events_per_s"),
    "event_table_bytes_per_event": ("event_table_bytes_per_event",),
}


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> float:
    v: Any = doc
    for p in path:
        v = v[p]
    return float(v)


def summarise(runs: list[dict[str, Any]], designs: list[str]) -> dict[str, Any]:
    med: dict[str, dict[str, float]] = {}
    ratio: dict[str, dict[str, float]] = {}
    for name in designs:
        mine = [r for r in runs if r["design"] == name]
        med[name] = {k: round(statistics.median(_get(r, p) for r in mine), 2) for k, p in KEY_FIGURES.items()}
        if name == "today" or "today" not in designs:
            continue
        ratio[name] = {}
        for k, p in KEY_FIGURES.items():
            rs = [_get(r, p) / _get(t, p) for r in mine for t in runs
                  if t["design"] == "today" and t["rep"] == r["rep"] and _get(t, p)]
            ratio[name][k] = round(statistics.median(rs), 3) if rs else float("nan")
    return {"median": med, "ratio_vs_today_median_of_reps": ratio}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--per-txn", type=int, default=100, help="events per writer transaction of the backlog")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="CHECKPOINT between the writes and the drain")
    ap.add_argument("--wal-level", default="logical")
    ap.add_argument("--hold-designs", default=None, help="designs for the long-writer scenario (default: --designs)")
    ap.add_argument("--hold-seconds", type=float, default=60.0, help="0 skips the long-writer scenario")
    ap.add_argument("--hold-rate", type=float, default=300.0, help="events/s of the steady writer")
    ap.add_argument("--out", type=Path, default=RESULTS / "storage_v2.json")
    args = ap.parse_args()
    designs = [d for d in args.designs.split(",") if d]
    if args.wal_level != "logical":
        designs = [d for d in designs if not d.startswith("logical")]
    home = Path(tempfile.mkdtemp(prefix="bench-storage-v2-"))
    pg = cluster.start(home, args.wal_level)
    dsn, url = pg.dsn(), pg.url()
    cpu = cluster.ClusterCpu(pg)
    load0 = os.getloadavg()
    started = time.monotonic()
    result: dict[str, Any] = {
        "command": "python -m bench.storage_v2 " + " ".join(sys.argv[1:]),
        "config": {"events": args.events, "shards": args.shards, "batch": args.batch, "per_txn": args.per_txn,
                   "reps": args.reps, "cold": args.cold, "wal_level": args.wal_level, "payload_bytes": 1024,
                   "hold_seconds": args.hold_seconds, "hold_rate": args.hold_rate},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    try:
        with psycopg.connect(dsn, autocommit=True) as admin:
            result["machine"]["postgres"] = str(admin.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            runs: list[dict[str, Any]] = []
            for rep in range(args.reps):
                order = designs[rep % len(designs):] + designs[:rep % len(designs)]
                for name in order:
                    d = make(name, dsn, url, args.shards, args.batch)
                    print(f"== drain rep {rep + 1}/{args.reps}: {name}", flush=True)
                    r = scenarios.drain(d, admin, cpu, events=args.events, per_txn=args.per_txn, cold=args.cold)
                    r["rep"] = rep
                    r["loadavg_1m"] = round(os.getloadavg()[0], 1)
                    runs.append(r)
                    print(json.dumps({k: r[k] for k in ("relay_pg_cpu_us_per_event", "wal_bytes_per_event",
                                                          "check")} | {"drain": r["drain"]["pg_cpu_us_per_event"],
                                     "buffers_per_claim": r["drain"]["statements"]["buffers_per_claim"]}),
                          flush=True)
            result["drain"] = {"runs": runs, **summarise(runs, designs)}
            if args.hold_seconds > 0:
                holds = []
                hold_designs = [x for x in (args.hold_designs or ",".join(designs)).split(",") if x]
                for name in hold_designs:
                    d = make(name, dsn, url, args.shards, args.batch)
                    print(f"== hold: {name}", flush=True)
                    h = scenarios.hold(d, admin, cpu, hold_s=args.hold_seconds, warm_s=10.0, after_s=10.0,
                                       rate=args.hold_rate, per_txn=3, long_rows=20)
                    holds.append(h)
                    print(json.dumps({k: v for k, v in h.items() if k != "samples"}), flush=True)
                result["hold"] = holds
    finally:
        pg.stop()
    result["machine"]["loadavg_start"] = [round(x, 1) for x in load0]
    result["machine"]["loadavg_end"] = [round(x, 1) for x in os.getloadavg()]
    result["seconds"] = round(time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({"drain": {k: v for k, v in result["drain"].items() if k != "runs"}}, indent=2))
    bad = [r for r in result["drain"]["runs"] if r["check"]["duplicates"] or r["check"]["missing"]
           or r["check"]["order_violations"]]
    bad += [h for h in result.get("hold", []) if h["check"]["duplicates"] or h["check"]["missing"]
            or h["check"]["order_violations"]]
    if bad:
        print(f"exactly-once or order check failed: {[b['design'] for b in bad]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
