"""``python -m bench.phases``: (d)'s latency with the relay's per-batch phases, for A/B runs of a relay setting.

Each arm gets a fresh stack and relay, a discarded warm-up at the offered rate, then the measured span, during
which the relay's ``outbox_relay_phase_seconds`` and ``outbox_relay_batch_rows`` histograms are read before and
after. Arms run interleaved (A, B, A, B, ...) so a slow phase of a shared machine hits both. Example, the two
producers per shard of decision 017 against one::

    python -m bench.phases --shards 2 --pairs 2 --b OUTBOX_RELAY_PRODUCERS_PER_SHARD=1

A fresh broker is still JIT-compiling in its first minute: compare arms of one run, not with ``bench.relay``.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import outbox
from bench.latency import latency, point
from bench.relay import Relay, migrated
from stack.env import start_stack

PHASES = ("claim", "flush", "commit", "mark")
_LINE = re.compile(r'outbox_relay_(phase_seconds|batch_rows)_(sum|count)(?:\{phase="(\w+)"\})? (\S+)')


def _histograms(relay: Relay) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for line in relay.metrics_text().splitlines():
        m = _LINE.match(line)
        if m:
            out[(m[3] or "rows", m[2])] = float(m[4])
    return out


def arm(shards: int, rate: int, warmup: float, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    stack = start_stack(home=home)
    try:
        url = migrated(stack)
        outbox.configure(shards=shards)
        relay = Relay(stack, url, home / "relay.log", OUTBOX_SHARDS=str(shards), **env)
        try:
            latency(url, stack.bootstrap, rate, warmup)
            before = _histograms(relay)
            d = latency(url, stack.bootstrap, rate, seconds)
            after = _histograms(relay)
        finally:
            relay.stop()
    finally:
        outbox.configure()
        stack.stop()
    batches = after.get(("rows", "count"), 0) - before.get(("rows", "count"), 0)

    def mean(name: str, scale: float) -> float | None:
        total = after.get((name, "sum"), 0) - before.get((name, "sum"), 0)
        return round(total / batches * scale, 2) if batches else None

    return {"env": env, "latency": point(d), "batches": batches, "rows_per_batch": mean("rows", 1),
            "phase_ms": {p: mean(p, 1000) for p in PHASES}}


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise SystemExit(f"expected NAME=value, got {p!r}")
        out[k] = v
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rate", type=int, default=1000, help="offered events/s")
    ap.add_argument("--warmup", type=float, default=20, help="seconds run and discarded first")
    ap.add_argument("--seconds", type=float, default=30, help="measured span")
    ap.add_argument("--pairs", type=int, default=2, help="interleaved A/B pairs")
    ap.add_argument("--a", nargs="*", default=[], metavar="NAME=value", help="relay environment of arm A")
    ap.add_argument("--b", nargs="*", default=[], metavar="NAME=value", help="relay environment of arm B")
    ap.add_argument("--out", type=Path, default=None, help="also write the runs here as JSON")
    args = ap.parse_args()
    arms = {"A": _env(args.a), "B": _env(args.b)}
    runs = []
    for i in range(args.pairs):
        for name, env in arms.items():
            r = {"arm": name, "pair": i, **arm(args.shards, args.rate, args.warmup, args.seconds, env)}
            print(json.dumps(r), flush=True)
            runs.append(r)
    if args.out:
        args.out.write_text(json.dumps({"shards": args.shards, "rate": args.rate, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
