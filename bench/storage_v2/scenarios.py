"""The two scenarios, run the same way for every design.

**drain**: the design's tables are created empty; a CHECKPOINT; ``events`` are written (``per_txn`` to a
transaction, one writer); then the relay drains them with rounds over every shard until all are relayed; then an
explicit VACUUM of the design's tables (the cleanup the drain left: dead tuples for today's protocol, hint bits,
visibility map and freezing for everyone). Postgres CPU and WAL are measured for each phase.

**hold**: a steady writer commits small transactions while the relay runs; after a warm-up one more writer
transaction takes its xid, writes a few rows and stays open for ``hold_s`` seconds, then commits. Every two
seconds the relay's cost per claim (buffers, ms) and its progress are sampled; latencies are commit → relayed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa

from bench.storage_v2 import cluster, writes
from bench.storage_v2.cluster import ClusterCpu, CpuSample, Statement
from bench.storage_v2.design import Design
from bench.storage_v2.logical import Logical
from bench.storage_v2.sink import check


def _per(x: float, n: int, scale: float = 1.0) -> float:
    return round(x * scale / n, 2) if n else 0.0


def _stmts(admin: psycopg.Connection[Any], d: Design) -> dict[str, Statement]:
    return {role: cluster.statements(admin, like) for role, like in d.statements.items()}


def _per_claim(before: dict[str, Statement], after: dict[str, Statement], events: int) -> dict[str, Any]:
    """Per relay step: calls, buffers and WAL per call; and the read statements' buffers per claim and per
    relayed event (a logical decoding "claim" is one call for every shard)."""
    out: dict[str, Any] = {}
    reads = 0
    for role, end in after.items():
        d = cluster.delta(before[role], end)
        out[role] = {"calls": d.calls, "blocks_per_call": _per(d.blocks, d.calls),
                     "wal_bytes_per_call": _per(d.wal_bytes, d.calls), "ms_per_call": round(d.ms / d.calls, 3)
                     if d.calls else 0.0, "rows_per_call": _per(d.rows, d.calls)}
        if role not in ("mark", "progress"):
            reads += d.blocks
    claims = cluster.delta(before["claim"], after["claim"]).calls
    out["buffers_per_claim"] = _per(reads, claims)
    out["buffers_per_event"] = _per(reads, events)
    return out


def _cpu(used: dict[str, float], n: int) -> dict[str, float]:
    return {k: _per(v, n, 1e6) for k, v in used.items()}


def drain(d: Design, admin: psycopg.Connection[Any], cpu: ClusterCpu, *, events: int, per_txn: int,
          cold: bool, timeout_s: float = 3600) -> dict[str, Any]:
    d.create(admin)
    writes.use(d.schema, d.shards)
    engine = sa.create_engine(d.url, poolclass=sa.pool.NullPool)
    d.open()
    try:
        admin.execute("CHECKPOINT")
        admin.execute("SELECT pg_stat_statements_reset()")
        c0, w0, f0 = cpu.sample(), cluster.wal_lsn(admin), cluster.wal_stats(admin)
        t0 = time.monotonic()
        writes.backlog(engine, events, per_txn)
        t1 = time.monotonic()
        c1, w1 = cpu.sample(), cluster.wal_lsn(admin)
        if cold:
            admin.execute("CHECKPOINT")
        s0 = _stmts(admin, d)
        c1b, w1b = cpu.sample(), cluster.wal_lsn(admin)
        client0 = time.process_time()
        t2 = time.monotonic()
        idle = 0
        while len(d.sink.log) < events:
            if d.round() == 0:
                idle += 1
                time.sleep(0.005)
            if time.monotonic() - t2 > timeout_s:
                raise TimeoutError(f"{d.name}: {len(d.sink.log)} of {events} relayed after {timeout_s:.0f} s")
        t3 = time.monotonic()
        client = time.process_time() - client0
        c2, w2, s1 = cpu.sample(), cluster.wal_lsn(admin), _stmts(admin, d)
        for t in d.tables:
            admin.execute(f"VACUUM {t}".encode())
        c3, w3 = cpu.sample(), cluster.wal_lsn(admin)
        time.sleep(1.2)  # pg_stat_wal is flushed by each backend within a second
        f3 = cluster.wal_stats(admin)
        size = admin.execute(f"SELECT pg_total_relation_size('\"{d.schema}\".event')".encode()).fetchone()
    finally:
        d.close()
        engine.dispose()
    drain_cpu, vac_cpu = ClusterCpu.used(c1b, c2), ClusterCpu.used(c2, c3)
    wal_write, wal_drain, wal_vac = w1 - w0, w2 - w1b, w3 - w2
    return {
        "design": d.name, "events": events,
        "write": {"seconds": round(t1 - t0, 2), "pg_cpu_us_per_event": _cpu(ClusterCpu.used(c0, c1), events),
                  "wal_bytes_per_event": _per(wal_write, events)},
        "drain": {"seconds": round(t3 - t2, 2), "events_per_s": round(events / (t3 - t2)),
                  "idle_rounds": idle, "pg_cpu_us_per_event": _cpu(drain_cpu, events),
                  "wal_bytes_per_event": _per(wal_drain, events), "statements": _per_claim(s0, s1, events),
                  "bench_client_cpu_us_per_event": _per(client, events, 1e6)},
        "vacuum": {"pg_cpu_us_per_event": _cpu(vac_cpu, events), "wal_bytes_per_event": _per(wal_vac, events)},
        "relay_pg_cpu_us_per_event": _per(drain_cpu["total"] + vac_cpu["total"], events, 1e6),
        "wal_bytes_per_event": _per(wal_write + wal_drain + wal_vac, events),
        "wal_fpi_per_event": _per(f3["fpi"] - f0["fpi"], events),
        "event_table_bytes_per_event": _per(int(size[0]) if size else 0, events),
        "kafka": {"transactions": d.sink.transactions,
                  "checkpoint_bytes_per_transaction": _per(d.sink.checkpoint_bytes, d.sink.transactions)},
        "check": check(d.sink.log, events),
        "design_detail": d.extra(),
    }


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1)


def hold(d: Design, admin: psycopg.Connection[Any], cpu: ClusterCpu, *, hold_s: float, warm_s: float,
         after_s: float, rate: float, per_txn: int, long_rows: int, every_s: float = 2.0,
         timeout_s: float = 600) -> dict[str, Any]:
    d.create(admin)
    writes.use(d.schema, d.shards)
    engine = sa.create_engine(d.url, pool_size=3)
    d.open()
    d.sink.track = True
    writer = writes.SteadyWriter(engine, rate, per_txn)
    long = writes.LongTransaction(engine)
    samples: list[dict[str, Any]] = []
    try:
        admin.execute("SELECT pg_stat_statements_reset()")
        start = time.monotonic()
        t_begin, t_commit, t_stop = start + warm_s, start + warm_s + hold_s, start + warm_s + hold_s + after_s
        writer.start()
        last_s, last_t = _stmts(admin, d), start
        began = committed = False
        c_hold0 = c_hold1 = cpu.sample()
        relayed_hold0 = relayed_hold1 = 0
        while True:
            now = time.monotonic()
            if not began and now >= t_begin:
                long.begin(long_rows)
                began, c_hold0, relayed_hold0 = True, cpu.sample(), len(d.sink.log)
            if began and not committed and now >= t_commit:
                c_hold1, relayed_hold1 = cpu.sample(), len(d.sink.log)
                long.commit()
                committed = True
            if now >= t_stop and not writer.stop.is_set():
                writer.stop.set()
                writer.join()
            if now - last_t >= every_s:
                s = _stmts(admin, d)
                claim = cluster.delta(last_s["claim"], s["claim"])
                reads = sum(cluster.delta(last_s[r], s[r]).blocks for r in s if r not in ("mark", "progress"))
                sample = {"t_s": round(now - start, 1), "phase": "hold" if began and not committed else
                          ("after" if committed else "warm"), "claims": claim.calls,
                          "buffers_per_claim": _per(reads, claim.calls),
                          "ms_per_claim": round(claim.ms / claim.calls, 3) if claim.calls else 0.0,
                          "relayed": len(d.sink.log), "written": len(writer.committed) + len(long.ids) * committed}
                if isinstance(d, Logical):
                    sample["slot_retained_mb"] = round(d.retained_bytes() / 1e6, 1)
                samples.append(sample)
                last_s, last_t = s, now
            if writer.error is not None:
                raise writer.error
            if writer.stop.is_set():
                want = set(writer.committed) | set(long.ids)
                if want <= d.sink.committed_at.keys():
                    break
                if now > t_stop + timeout_s:
                    raise TimeoutError(f"{d.name}: rows still unrelayed {timeout_s:.0f} s after the writers stopped")
            if d.round() == 0:
                time.sleep(0.005)
    finally:
        writer.stop.set()
        d.close()
        engine.dispose()
    return _hold_report(d, samples, writer, long, span=(t_begin, t_commit), cpus=(c_hold0, c_hold1),
                        relayed_in_hold=relayed_hold1 - relayed_hold0)


def _hold_report(d: Design, samples: list[dict[str, Any]], writer: writes.SteadyWriter,
                 long: writes.LongTransaction, *, span: tuple[float, float], cpus: tuple[CpuSample, CpuSample],
                 relayed_in_hold: int) -> dict[str, Any]:
    at = d.sink.committed_at
    t_begin, t_commit = span
    c0, c1 = cpus

    def lat(when: Callable[[float], bool]) -> list[float]:
        return [at[i] - t for i, t in writer.committed.items() if i in at and when(t)]
    during = lat(lambda t: t_begin + 1 <= t < t_commit)
    before = lat(lambda t: t < t_begin)
    written_in_hold = sum(1 for t in writer.committed.values() if t_begin <= t < t_commit)
    hold_samples = [s for s in samples if s["phase"] == "hold" and s["claims"]]
    fifth = max(1, len(hold_samples) // 5)
    early = statistics.median(s["buffers_per_claim"] for s in hold_samples[:fifth]) if hold_samples else 0.0
    late = statistics.median(s["buffers_per_claim"] for s in hold_samples[-fifth:]) if hold_samples else 0.0
    warm = [s["buffers_per_claim"] for s in samples if s["phase"] == "warm" and s["claims"]]
    out = {
        "design": d.name,
        "check": check(d.sink.log, len(writer.committed) + len(long.ids)),
        "latency_ms_before_hold": {"p50": _pct(before, 0.5), "p99": _pct(before, 0.99)},
        "latency_ms_during_hold": {"p50": _pct(during, 0.5), "p99": _pct(during, 0.99),
                                   "max": _pct(during, 1.0)},
        "long_rows_relayed_ms_after_commit": _pct([at[i] - long.committed_at for i in long.ids if i in at], 1.0),
        "relayed_during_hold_per_written": round(relayed_in_hold / written_in_hold, 3) if written_in_hold else None,
        "buffers_per_claim": {"warm": statistics.median(warm) if warm else 0.0, "hold_first_fifth": early,
                              "hold_last_fifth": late,
                              "growth_last_vs_first": round(late / early, 2) if early else None},
        "pg_cpu_us_per_written_event_during_hold": _per(ClusterCpu.used(c0, c1)["total"], written_in_hold, 1e6),
        "samples": samples,
    }
    if hold_samples and "slot_retained_mb" in hold_samples[-1]:
        out["slot_retained_mb_at_commit"] = hold_samples[-1]["slot_retained_mb"]
    return out
