"""``python -m bench.backlog``: (e) at a chosen shard count, with a time series showing where a big drain goes.

(e) in ``bench.relay`` runs at the default shard count. This runs the same drains, the median of five 10k drains
and one big drain, with ``--shards`` relay shards and writers. While the big drain runs, it samples every
``--every`` seconds:

- the relay's publish rate;
- an *unbounded* claim's ``EXPLAIN (ANALYZE, BUFFERS)``, i.e. what a claim would cost without the claim floor;
- dead tuples, autovacuum progress and WAL volume (full-page images included).

This is how ADR 015 found the two causes of slow big drains. Writes ``bench/results/backlog-<shards>.json``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

import outbox
from bench.relay import RESULTS, Relay, drain, migrated, teardown
from stack.env import start_stack

_CLAIM = ("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id, payload FROM outbox.event WHERE shard = 0 AND "
          "published_at IS NULL AND dead_at IS NULL ORDER BY id LIMIT 500")


def _sampler(relay: Relay, dsn: str, every: float, stop: threading.Event, out: list[dict[str, Any]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        last = (time.monotonic(), relay.metric("outbox_relay_published_total"))
        t0 = last[0]
        while not stop.wait(every):
            now = (time.monotonic(), relay.metric("outbox_relay_published_total"))
            rate = (now[1] - last[1]) / (now[0] - last[0])
            last = now
            plan = c.execute(_CLAIM).fetchone()[0][0]  # type: ignore[index]
            top = plan["Plan"]
            dead = c.execute("SELECT n_dead_tup, autovacuum_count FROM pg_stat_user_tables "
                             "WHERE relname = 'event'").fetchone()
            vac = c.execute("SELECT phase FROM pg_stat_progress_vacuum").fetchall()
            wal = c.execute("SELECT wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
            assert dead is not None and wal is not None
            out.append({"t_s": round(now[0] - t0, 1), "events_per_s": round(rate),
                        "unbounded_claim_ms": round(plan["Execution Time"], 2),
                        "unbounded_claim_buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
                        "dead_tuples": dead[0], "autovacuums": dead[1], "vacuum_phase": [v[0] for v in vac],
                        "wal_fpi": int(wal[0]), "wal_mb": round(int(wal[1]) / 1e6)})
            print(out[-1], flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--every", type=float, default=3.0, help="seconds between samples of the big drain")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out_path = args.out or RESULTS / f"backlog-{args.shards}.json"
    home = Path(tempfile.mkdtemp(prefix="bench-backlog-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack = start_stack(home=home)
    relay: Relay | None = None
    try:
        url = migrated(stack)
        outbox.configure(shards=args.shards)
        relay = Relay(stack, url, home / "relay.log", OUTBOX_SHARDS=str(args.shards))
        drain(relay, url, stack.bootstrap, 50_000, verify=False)  # warm-up, as in bench.relay
        smalls = sorted(drain(relay, url, stack.bootstrap, args.small, verify=False)["events_per_s"]
                        for _ in range(5))
        samples: list[dict[str, Any]] = []
        stop = threading.Event()
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        th = threading.Thread(target=_sampler, args=(relay, dsn, args.every, stop, samples), daemon=True)
        th.start()
        big = drain(relay, url, stack.bootstrap, args.big, verify=False)
        stop.set()
        th.join(30)
        result = {"shards": args.shards, "backlog_ratio_big_vs_small": round(big["events_per_s"] / smalls[2], 3),
                  "big": args.big, "big_events_per_s": big["events_per_s"], "small": args.small,
                  "small_median_events_per_s": smalls[2], "small_runs_events_per_s": smalls, "samples": samples}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
        return 0 if relay.stop() == 0 else 1
    finally:
        outbox.configure()
        teardown(relay, stack, home)


if __name__ == "__main__":
    raise SystemExit(main())
