"""Render the README's benchmark table from bench/results/*.json (called by `make bench`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _load(name: str) -> dict[str, Any]:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.exists() else {}


def table() -> str:
    w, r, c, p = _load("write.json"), _load("relay.json"), _load("reconcile.json"), _load("prune.json")
    b = _load("backlog-2.json")
    rows = ["| benchmark | ours | reference (same run) | ratio | goal |", "|---|---|---|---|---|"]
    if w:
        rows.append(f"| write: business txn + 1 event vs the same txn alone, {w.get('writers', 8)} writers "
                    f"| {w['txn_per_s_with_event']:,.0f} tx/s | {w['txn_per_s_without_event']:,.0f} tx/s "
                    f"| **{w['ratio']:.2f}** | ≥ 0.9 |")
    if r:
        drain = r["details"].get("drain_best") or r["details"].get("drain", {})
        rows.append(f"| relay: drain {drain.get('events', 0):,} x 1 KiB exactly-once until visible "
                    f"read_committed, vs a raw idempotent producer | {r['relay_events_per_s']:,.0f} ev/s "
                    f"| {r['raw_producer_events_per_s']:,.0f} ev/s | **{r['ratio']:.2f}** | ≥ 0.5 |")
        lat = r.get("latency_ms", {})
        if lat:
            rows.append(f"| relay: commit → consumer latency at {r.get('offered_rate', '?')} ev/s "
                        f"| p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms | — | — | p50 ≤ 10, p99 ≤ 50 ms |")
        for n, pt in sorted((r.get("latency_by_shards_ms") or {}).items(), key=lambda kv: -int(kv[0])):
            if str(n) != str(r["details"].get("shards", 8)):
                rows.append(f"| same, `OUTBOX_SHARDS={n}` (relay and writers) | p50 {pt['p50']:.0f} ms, "
                            f"p99 {pt['p99']:.0f} ms | — | — | p50 ≤ 10, p99 ≤ 50 ms |")
        if r.get("backlog_ratio_1m_vs_10k") is not None:
            d = r["details"]
            rows.append(f"| relay: drain a 1M backlog vs a 10k backlog, `OUTBOX_SHARDS={d.get('shards', 8)}` "
                        f"| {d['drain_big']['events_per_s']:,.0f} ev/s | {d['drain_small']['events_per_s']:,.0f} ev/s "
                        f"| **{r['backlog_ratio_1m_vs_10k']:.2f}** | ≥ 0.9 |")
        if b:
            rows.append(f"| same, `OUTBOX_SHARDS={b['shards']}` (`python -m bench.backlog`) "
                        f"| {b['big_events_per_s']:,.0f} ev/s | {b['small_median_events_per_s']:,.0f} ev/s "
                        f"| **{b['backlog_ratio_big_vs_small']:.2f}** | ≥ 0.9 |")
        if r.get("relay_peak_rss_mb") is not None:
            rows.append(f"| relay: peak RSS over the whole run | {r['relay_peak_rss_mb']:.0f} MB | — | — | ≤ 150 MB |")
        quiet = r.get("latency_quiet_ms")
        if quiet:
            rows.append(f"| relay: commit → consumer latency at {r.get('quiet_rate')} ev/s (a quiet service) "
                        f"| p50 {quiet['p50']:.0f} ms, p99 {quiet['p99']:.0f} ms | — | — | — |")
    if c:
        rows.append(f"| reconcile: {c['events']:,} outbox events vs {c['acknowledgements']:,} acknowledgements "
                    f"| {c['seconds']:.1f} s, {c['peak_rss_mb']:.0f} MB peak RSS | — "
                    f"| {c['found']}/{c['planted']} planted found | ≤ 30 s, ≤ 300 MB |")
    if p:
        after = p["after_vacuum"]["claim"]["median_ms"]
        rows.append(f"| claim latency after pruning {p['rows']:,} rows | {after:.1f} ms "
                    f"median | {p['before']['claim']['median_ms']:.1f} ms before | — | flat |")
    return "\n".join(rows)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = f"{START}\n{table()}\n{END}"
    text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: block, text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
